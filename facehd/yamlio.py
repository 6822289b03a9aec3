"""Reading YAML files the way facehd's config and dataset files are read: safe (no tags that
build objects), and strict about a key written twice in one mapping, which plain YAML loaders
accept silently, keeping the last value.

Numbers in exponent notation are numbers whether or not they have a decimal point and a sign
in the exponent (``lr: 1e-4``, ``5e3``), as in YAML 1.2; PyYAML, which follows YAML 1.1, would
read them as strings. :func:`safe_dump_text` quotes a string of that form, so it reads back as
the string it was.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["DuplicateKeyError", "safe_dump_text", "safe_load_unique"]

#: Plain scalars in exponent notation that YAML 1.1 leaves strings: ``1e-4``, ``2E5``,
#: ``1.5e3``, ``-.5e+2`` (those with a decimal point and a signed exponent are floats there too).
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
_FLOAT_TAG = "tag:yaml.org,2002:float"


class DuplicateKeyError(yaml.YAMLError, ValueError):
    """A mapping of a YAML text holds the same key twice (the message gives both lines)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with a key given twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class says so
                break
            if first is not None:
                raise DuplicateKeyError(
                    f"line {key_node.start_mark.line + 1}: key {key!r} is given twice (first "
                    f"on line {first.start_mark.line + 1}); give it once"
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_implicit_resolver(_FLOAT_TAG, _EXPONENT_FLOAT, list("-+0123456789."))


class _Dumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that quotes strings :class:`_UniqueKeyLoader` would read as numbers."""


_Dumper.add_implicit_resolver(_FLOAT_TAG, _EXPONENT_FLOAT, list("-+0123456789."))


def safe_dump_text(data: Any, **kwargs: Any) -> str:
    """``yaml.safe_dump`` of ``data`` to a string that :func:`safe_load_unique` reads back as
    ``data`` (keyword arguments as ``yaml.safe_dump``'s)."""
    return yaml.dump(data, Dumper=_Dumper, **kwargs)


def safe_load_unique(text: str) -> Any:
    """``yaml.safe_load`` of ``text``, raising :class:`DuplicateKeyError` (with the line) where a
    mapping holds a key twice."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
