"""registry.names.validate_name: a strict pattern after NFKC normalisation."""

from __future__ import annotations

import pytest

from registry.errors import InvalidInput
from registry.names import MAX_NAME_LEN, validate_name

GOOD = ["a", "sent", "sst2-minilm", "team-a.sentiment_v2", "0", "a" * MAX_NAME_LEN, "x.y-z_0"]
BAD = [
    "", " ", "..", ".", "../etc/passwd", "a/../b", "a/b", "a\\b", "/abs", "a..b", "-a", "a-", ".a", "a.",
    "A", "Sent", "a b", "a\tb", "a\nb", "a\rb", "a\x00b", "a\x1bb", "a\x7fb", "a\u200bb", "a\u202eb",
    "ｓｅｎｔ",  # fullwidth: NFKC gives "sent", but the raw value is not plain ASCII
    "．．／etc",  # fullwidth traversal: NFKC gives "../etc"
    "ﬁle",  # a ligature that NFKC expands to "file"
    "naïve", "é", "a" * (MAX_NAME_LEN + 1), "%2e%2e", "a%2fb", "a:b", "a;b", "a*b", "a?b", "a#b", "~a", "$HOME",
]


@pytest.mark.parametrize("name", GOOD)
def test_good_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", BAD)
def test_bad_names(name: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_name(name, field="task")
    assert info.value.field == "task" and info.value.status == 422


@pytest.mark.parametrize("value", [None, 5, b"sent", ["sent"], {"a": 1}])
def test_non_strings(value: object) -> None:
    with pytest.raises(InvalidInput):
        validate_name(value)


def test_huge_input_is_refused_quickly() -> None:
    with pytest.raises(InvalidInput, match="longer"):
        validate_name("a" * 10_000_000)
