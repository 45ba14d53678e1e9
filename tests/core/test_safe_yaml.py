"""core/safe_yaml.py: safe parsing, one-line errors with line and column, and alias bombs refused fast."""

from __future__ import annotations

import time

import pytest
from cvae.core import safe_yaml
from cvae.core.safe_yaml import YamlError


def billion_laughs(levels: int = 9, width: int = 10) -> str:
    """The classic alias bomb: each level a list of ``width`` aliases of the level below (10**9 values)."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def merge_bomb(levels: int = 9, width: int = 10) -> str:
    """The same through merge keys, which PyYAML flattens by copying the merged pairs at every level."""
    lines = ["m0: &m0 {x: 1}"]
    for i in range(1, levels):
        lines.append(f"m{i}: &m{i} {{<<: [" + ", ".join([f"*m{i - 1}"] * width) + "]}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("make", [billion_laughs, merge_bomb], ids=["lists", "merge-keys"])
def test_an_alias_bomb_is_refused_at_once_with_one_line(make) -> None:
    text = make()
    assert len(text) < 700
    began = time.perf_counter()
    with pytest.raises(YamlError) as info:
        safe_yaml.load(text, "bomb.yaml")
    assert time.perf_counter() - began < 0.5
    message = str(info.value)
    assert message == ("bomb.yaml: YAML aliases expand to more than 100000 values (an alias bomb?): "
                       "write the values out")
    assert "\n" not in message


def test_benign_aliases_still_load() -> None:
    text = ("base: &base {lr: 0.001, milestones: [3, 6]}\n"
            "a: *base\n"
            "b: {<<: *base, lr: 0.01}\n"
            "c: [*base, *base, *base]\n")
    data = safe_yaml.load(text, "ok.yaml")
    assert data["a"] == {"lr": 0.001, "milestones": [3, 6]}
    assert data["b"] == {"lr": 0.01, "milestones": [3, 6]}
    assert data["c"] == [data["a"]] * 3


def test_a_large_document_without_aliases_loads() -> None:
    """The limit is on what aliases add: a long literal list is not a bomb."""
    text = "values: [" + ", ".join(["1"] * 110_000) + "]\n"
    assert len(safe_yaml.load(text, "big.yaml")["values"]) == 110_000


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(YamlError, match=r"^loop\.yaml: an alias refers to a node that contains it"):
        safe_yaml.load("a: &x [1, *x]\n", "loop.yaml")


@pytest.mark.parametrize("text, expected", [
    ("a: [1, 2\n", "bad.yaml: invalid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>'"),
    ("a: 1\n b: 2\n", "bad.yaml: invalid YAML at line 2, column 3: mapping values are not allowed here"),
    ("a: 1\n---\nb: 2\n", "bad.yaml: invalid YAML at line 2, column 1: expected a single document in the stream, "
     "but found another document"),
    ("a: !!python/object:os.system ls\n", "bad.yaml: invalid YAML at line 1, column 4: could not determine a "
     "constructor for the tag 'tag:yaml.org,2002:python/object:os.system'"),
], ids=["unclosed", "indentation", "two-documents", "python-tag"])
def test_invalid_yaml_is_one_line_with_line_and_column(text: str, expected: str) -> None:
    with pytest.raises(YamlError) as info:
        safe_yaml.load(text, "bad.yaml")
    assert str(info.value) == expected


def test_empty_text_is_none() -> None:
    assert safe_yaml.load("", "empty.yaml") is None
    assert safe_yaml.load("# only a comment\n", "empty.yaml") is None
