"""The README's Python examples name what the package has.

Each ```python block is parsed, not run (it reads files a user makes first): every name it
imports must exist, and every call it makes on an imported name, on a method of one, or on a
method of a value one returned (its return annotation says of which class) must name a
callable that accepts the call's positional count and keywords.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def markdown_lines(text: str) -> Iterator[tuple[int, str, tuple[int, str] | None]]:
    """``(number, line, fence)`` of every line of a Markdown text but the fence lines
    themselves: ``fence`` is ``(the opening line's number, its info string)`` inside a fenced
    block (``""`` for a bare fence), None outside."""
    fence: tuple[int, str] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fence = (number, line[3:].strip()) if fence is None else None
            continue
        yield number, line, fence


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(first line, source)`` of each fenced ```python block of a Markdown text."""
    blocks: dict[int, list[str]] = {}
    for _, line, fence in markdown_lines(text):
        if fence is not None and fence[1] == "python":
            blocks.setdefault(fence[0], []).append(line)
    return [(start + 1, "\n".join(lines)) for start, lines in blocks.items()]


def _returned_class(obj: Any) -> type | None:
    """The class a callable returns: the class itself, or its return annotation's."""
    if inspect.isclass(obj):
        return obj
    try:
        hint = typing.get_type_hints(obj).get("return")
    except Exception:  # an annotation that does not resolve here says nothing
        return None
    return hint if inspect.isclass(hint) else None


def _bindable(fn: Any, call: ast.Call, bound_self: bool) -> str | None:
    """Why ``call`` cannot call ``fn`` (None when it can); calls with ``*``/``**`` pass."""
    if any(isinstance(a, ast.Starred) for a in call.args) or any(
        k.arg is None for k in call.keywords
    ):
        return None
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature
        return None
    positional = [None] * (len(call.args) + (1 if bound_self else 0))
    try:
        signature.bind_partial(*positional, **{k.arg: None for k in call.keywords if k.arg})
    except TypeError as exc:
        return str(exc)
    return None


def check_block(source: str, first_line: int = 1) -> list[str]:
    """What a Python block starting at line ``first_line`` names that the package lacks."""
    tree = ast.parse(source)
    shift = first_line - 1
    known: dict[str, Any] = {}  # a name bound to an imported object
    instances: dict[str, type] = {}  # a name bound to a value of a known class
    wrong: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    wrong.append(f"line {node.lineno + shift}: {node.module} has no {alias.name}")
                else:
                    known[alias.asname or alias.name] = getattr(module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                known[alias.asname or alias.name.split(".")[0]] = importlib.import_module(
                    alias.name.split(".")[0] if alias.asname is None else alias.name
                )

    def resolve(func: ast.expr) -> tuple[Any, bool] | None:
        """The object a call's function names and whether a ``self`` is bound to it."""
        if isinstance(func, ast.Name) and func.id in known:
            return known[func.id], False
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            owner = func.value.id
            if owner in known:
                if not hasattr(known[owner], func.attr):
                    wrong.append(f"line {func.lineno + shift}: {owner} has no {func.attr}")
                    return None
                return getattr(known[owner], func.attr), False
            if owner in instances:
                cls = instances[owner]
                if not callable(getattr(cls, func.attr, None)):
                    wrong.append(
                        f"line {func.lineno + shift}: {cls.__name__} has no method {func.attr}"
                    )
                    return None
                raw = inspect.getattr_static(cls, func.attr)
                plain = not isinstance(raw, staticmethod | classmethod)
                return getattr(cls, func.attr), plain
        return None

    def bind(target: ast.expr, value: ast.expr) -> None:
        if isinstance(target, ast.Name) and isinstance(value, ast.Call):
            found = resolve(value.func)
            if found is not None and (cls := _returned_class(found[0])) is not None:
                instances[target.id] = cls

    # every name bound first, then every call checked
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            bind(node.targets[0], node.value)
        elif isinstance(node, ast.With):
            for item in node.items:
                if item.optional_vars is not None:
                    bind(item.optional_vars, item.context_expr)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            found = resolve(node.func)
            if found is not None and (why := _bindable(found[0], node, found[1])):
                wrong.append(f"line {node.lineno + shift}: {ast.unparse(node.func)}(...): {why}")
    return sorted(set(wrong))


def test_readme_python_blocks_name_what_the_package_has() -> None:
    blocks = python_blocks((REPO / "README.md").read_text())
    assert len(blocks) >= 3
    wrong = [f"README {w}" for start, src in blocks for w in check_block(src, start)]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("from facehd.h5io import open_datasets", "has no open_datasets"),
        ("import facehd.h5io as h\nh.opn_dataset('x')", "h has no opn_dataset"),
        (
            "from facehd.h5io import open_dataset\nwith open_dataset('x') as ds:\n"
            "    ds.read_fields('a')",
            "H5Dataset has no method read_fields",
        ),
        (
            "from facehd.h5io import open_dataset\nds = open_dataset('x')\n"
            "ds.read_field('a', 0, 1)",
            "too many positional arguments",
        ),
        ("from models.multiview import MultiViewConfig\nMultiViewConfig(iteration=5)", "iteration"),
        (
            "from models.reconstruct import Reconstructor\nr = Reconstructor.load('m.pt')\n"
            "r.run_photos('a.jpg')",
            "Reconstructor has no method run_photos",
        ),
    ],
)
def test_check_block_finds_what_is_missing(source: str, fragment: str) -> None:
    wrong = check_block(source)
    assert any(fragment in w for w in wrong), wrong


def test_check_block_accepts_what_exists() -> None:
    source = (
        "from facehd.h5io import open_dataset\n"
        "from models.reconstruct import Reconstructor\n"
        "with open_dataset('x') as ds:\n"
        "    ds.read_field('displacement', slice(0, 8))\n"
        "recon = Reconstructor.load('m.pt')\n"
        "rec, aligned = recon.run_photo('a.jpg')\n"
    )
    assert check_block(source) == []


def section_anchors(text: str) -> set[str]:
    """The anchors a Markdown renderer gives the headings of ``text`` outside fenced blocks, as
    GitHub makes them: lower case, every character but letters, digits, ``_``, ``-`` and spaces
    dropped, spaces turned into ``-``; a repeated anchor gets ``-1``, ``-2``, ... in order."""
    import re

    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for _, line, fence in markdown_lines(text):
        heading = re.match(r"#{1,6} +(.*?) *#* *$", line)
        if fence is not None or heading is None:
            continue
        base = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
        n = seen.get(base, 0)
        seen[base] = n + 1
        anchors.add(base if n == 0 else f"{base}-{n}")
    return anchors


def broken_section_links(text: str) -> list[str]:
    """The in-page links ``[...](#anchor)`` of ``text`` that name no heading's anchor."""
    import re

    anchors = section_anchors(text)
    return sorted({a for a in re.findall(r"\]\(#([^)\s]+)\)", text) if a not in anchors})


def test_readme_section_links_lead_to_sections() -> None:
    text = (REPO / "README.md").read_text()
    assert text.count("](#") >= 10  # the contents line and the command table's links
    assert broken_section_links(text) == []


def test_section_anchors_follow_the_renderer() -> None:
    text = (
        "# facehd\n## Install\n### Multi-view reconstruction (MV-HRN): `reconstruct --multiview`\n"
        "```bash\n# a comment, not a heading\n```\n## Install\n## Speed: `facehd perf`\n"
    )
    assert section_anchors(text) == {
        "facehd",
        "install",
        "install-1",
        "multi-view-reconstruction-mv-hrn-reconstruct---multiview",
        "speed-facehd-perf",
    }
    links = (
        "[a](#install) [b](#install-1) [c](#speed-facehd-perf) [d](#speed) "
        "[e](#a-comment-not-a-heading)"
    )
    assert broken_section_links(text + links) == ["a-comment-not-a-heading", "speed"]
