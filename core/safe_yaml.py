"""YAML for every file the project reads: ``yaml.SafeLoader``, one-line errors, and no alias bombs.

PyYAML resolves an alias to the node of its anchor, so a "billion laughs" document (9 levels of 10 aliases,
600 bytes) loads quickly into shared objects, and then blows up whatever walks it as a tree: a deep copy,
a JSON dump, W&B's config upload, a merge key (``<<: [*a, *a, ...]``), which PyYAML flattens by copying.
:func:`load` composes the document first and counts the values it stands for with every alias written
out (memoized per node, so the count is cheap even for a billion values), and refuses a document whose
aliases add more than :data:`MAX_ALIAS_VALUES` values before anything is constructed.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_ALIAS_VALUES = 100_000
"""The most values (scalars and containers) a document's aliases may add once written out."""


class YamlError(ValueError):
    """A YAML text that cannot be read, or whose aliases expand too much; one line naming its source."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _describe(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    if context and problem.startswith("but "):  # "expected a single document in the stream, but found ..."
        problem = f"{context}, {problem}"
    return f"invalid YAML{where}: {_one_line(problem)}"


def _expanded_size(root: yaml.Node) -> tuple[int, int]:
    """(values with every alias written out, distinct nodes); raises ValueError for a recursive alias."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ValueError("an alias refers to a node that contains it (a recursive structure)")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        sizes[key] = total
        return total

    return size(root), len(sizes)


def load(text: str, source: str) -> Any:
    """Parse one YAML document with ``yaml.SafeLoader``.

    ``source`` (a file name, or e.g. ``"command line"``) starts every error message.

    Raises:
        YamlError: invalid YAML (with line and column), more than one document, a recursive alias, or
            aliases that expand to more than :data:`MAX_ALIAS_VALUES` values (an alias bomb).
    """
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            expanded, distinct = _expanded_size(node)
        except ValueError as err:
            raise YamlError(f"{source}: {err}: write the values out") from None
        if expanded - distinct > MAX_ALIAS_VALUES:
            raise YamlError(f"{source}: YAML aliases expand to more than {MAX_ALIAS_VALUES} values (an alias "
                            "bomb?): write the values out")
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise YamlError(f"{source}: {_describe(err)}") from None
    except RecursionError:
        raise YamlError(f"{source}: YAML nested too deeply to read") from None
    finally:
        if loader is not None:
            loader.dispose()
