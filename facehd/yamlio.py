"""Reading YAML files the way facehd's config and dataset files are read: safe (no tags that
build objects), and strict about a key written twice in one mapping, which plain YAML loaders
accept silently, keeping the last value."""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["DuplicateKeyError", "safe_load_unique"]


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


def safe_load_unique(text: str) -> Any:
    """``yaml.safe_load`` of ``text``, raising :class:`DuplicateKeyError` (with the line) where a
    mapping holds a key twice."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
