"""YAML to plain Python, remembering the line of every value.

PyYAML's composer keeps aliases as shared nodes; we expand them ourselves with
a budget, so a "billion laughs" file is refused instead of eating the memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from emulator.model import TopologyError, Where

#: How many values a file may expand to (aliases included): plenty for a
#: hand-written topology, far below what would hurt the machine.
MAX_VALUES = 2_000_000
MAX_FILE_BYTES = 64 * 1024 * 1024
#: How deep mappings and lists may nest: a topology needs five or six levels. PyYAML composes recursively,
#: so a list nested 5,000 deep would otherwise end in a RecursionError.
MAX_DEPTH = 64


class Located:
    """Parsed YAML and the line of each path in it."""

    def __init__(self, data: Any, lines: dict[tuple, int], file: str | None):
        self.data = data
        self.lines = lines
        self.file = file

    def where(self, *path: Any) -> Where:
        """The line of the deepest known prefix of `path`."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return Where(self.file, line)
        return Where(self.file)


def _too_deep(text: str, file: str | None) -> TopologyError:
    """Where the nesting first passes MAX_DEPTH (PyYAML's parser is not recursive: it can walk any depth)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                return TopologyError(f"mappings and lists nest deeper than {MAX_DEPTH} levels here",
                                     where=Where(file, event.start_mark.line + 1))
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return TopologyError(f"mappings and lists nest deeper than {MAX_DEPTH} levels", where=Where(file))


def _merged_size(node: yaml.Node, seen: dict[int, int]) -> int:
    """How many values a mapping holds once its merge keys (<<) are expanded, without expanding them:
    flatten_mapping copies merged entries, so nested merges of aliases grow exponentially before any
    value is built and counted."""
    known = seen.get(id(node))
    if known is not None:
        return known
    seen[id(node)] = 0  # a cycle counts nothing more
    total = 0
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            for merged in value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]:
                if isinstance(merged, yaml.MappingNode):
                    total += _merged_size(merged, seen)
        else:
            total += 1
        if total > MAX_VALUES:
            break
    seen[id(node)] = total
    return total


def load_yaml(text: str, file: str | None = None) -> Located:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise _too_deep(text, file) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else None
        raise TopologyError(f"not valid YAML: {exc.problem}", where=Where(file, line)) from None
    except yaml.YAMLError as exc:
        raise TopologyError(f"not valid YAML: {exc}", where=Where(file)) from None
    if root is None:
        raise TopologyError("the file is empty; expected a mapping with version, nodes and links", where=Where(file, 1))
    lines: dict[tuple, int] = {}
    budget = [MAX_VALUES]
    constructor = yaml.SafeLoader("")  # only used to turn scalars into Python values
    merged_sizes: dict[int, int] = {}

    def over_budget(node: yaml.Node) -> TopologyError:
        return TopologyError(f"YAML aliases expand past {MAX_VALUES:,} values; write the topology out or use a generator",
                             where=Where(file, node.start_mark.line + 1))

    def build(node: yaml.Node, path: tuple) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise over_budget(node)
        if len(path) > MAX_DEPTH:
            raise TopologyError(f"mappings and lists nest deeper than {MAX_DEPTH} levels here",
                                where=Where(file, node.start_mark.line + 1))
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            if _merged_size(node, merged_sizes) > budget[0]:
                raise over_budget(node)
            constructor.flatten_mapping(node)
            for key_node, value_node in node.value:
                key = constructor.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    raise TopologyError("mapping keys must be plain scalars", where=Where(file, key_node.start_mark.line + 1))
                if key in out:
                    raise TopologyError(
                        f"duplicate key {key!r}", where=Where(file, key_node.start_mark.line + 1), field=_dotted(path + (key,))
                    )
                lines[path + (key,)] = key_node.start_mark.line + 1
                out[key] = build(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(item, path + (i,)) for i, item in enumerate(node.value)]
        return constructor.construct_object(node, deep=True)

    data = build(root, ())
    return Located(data, lines, file)


def read_yaml_file(path: str | Path) -> Located:
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise TopologyError(f"file is {size:,} bytes; the limit is {MAX_FILE_BYTES:,}", where=Where(str(p)))
        text = p.read_text()
    except FileNotFoundError:
        raise TopologyError("no such file", where=Where(str(p))) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise TopologyError(f"cannot read: {exc}", where=Where(str(p))) from None
    return load_yaml(text, str(p))


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)
