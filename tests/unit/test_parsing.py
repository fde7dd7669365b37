"""registry.datasets.parsing: everything a user can get wrong in a dataset file is a 422 naming it."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from registry.datasets.parsing import ColumnMapping, infer_format, parse_split
from registry.errors import InvalidInput

M = ColumnMapping(text="text", label="label")


def parse(data: bytes, *, fmt: str = "tsv", mapping: ColumnMapping = M, task_type: str = "single_label",
          labels: list[str] | None = None, max_line_bytes: int = 1000) -> tuple[Any, list[dict[str, Any]]]:
    out = io.BytesIO()
    res = parse_split(io.BytesIO(data), out, split="train", fmt=fmt, mapping=mapping, task_type=task_type,
                      labels=["neg", "pos"] if labels is None else labels, max_line_bytes=max_line_bytes)
    return res, [json.loads(line) for line in out.getvalue().splitlines()]


def bad(data: bytes, field: str, match: str = "", **kw: Any) -> None:
    with pytest.raises(InvalidInput, match=match) as info:
        parse(data, **kw)
    assert info.value.field == field, info.value.detail


def test_tsv_csv_jsonl() -> None:
    res, rows = parse(b"text\tlabel\ngood\tpos\nbad\tneg\n")
    assert res.rows == 2 and res.label_counts == {"pos": 1, "neg": 1}
    assert rows[0] == {"text": "good", "text_pair": None, "label": "pos", "response": None}
    res, rows = parse(b'text,label\n"a, quoted ""one""",pos\n', fmt="csv")
    assert rows[0]["text"] == 'a, quoted "one"'
    res, rows = parse(b'{"text": "x", "label": "neg"}\n\n{"text": "y", "label": "pos"}\n', fmt="jsonl")
    assert res.rows == 2
    res, rows = parse(b"\xef\xbb\xbftext\tlabel\nok\tpos\n")  # a UTF-8 BOM is fine
    assert rows[0]["text"] == "ok"
    res, rows = parse(b"ok\tpos\n", mapping=ColumnMapping(text="0", label="1", has_header=False))
    assert rows[0]["label"] == "pos"


def test_empty_and_header_only() -> None:
    bad(b"", "train", "no data rows")
    bad(b"text\tlabel\n", "train", "no data rows")
    bad(b"\n\n\n", "train", "no data rows")


def test_columns() -> None:
    bad(b"txt\tlabel\nhi\tpos\n", "mapping.text", "not in the header")
    bad(b"text\tlbl\nhi\tpos\n", "mapping.label", "not in the header")
    bad(b"text\tlabel\nhi\n", "mapping.label", "missing or empty")
    bad(b"text\tlabel\n \tpos\n", "mapping.text", "missing or empty")
    bad(b"hi\tpos\n", "mapping.text", "0-based", mapping=ColumnMapping(text="text", label="1", has_header=False))
    bad(b"hi\tpos\n", "mapping.text", ">= 0", mapping=ColumnMapping(text="-1", label="1", has_header=False))
    bad(b'{"txt": "x", "label": "pos"}\n', "mapping.text", fmt="jsonl")
    bad(b'{"text": 3, "label": "pos"}\n', "mapping.text", "string", fmt="jsonl")


def test_encoding_and_lines() -> None:
    bad(b"text\tlabel\ncaf\xe9\tpos\n", "train", "line 2 is not valid UTF-8")
    bad(b"text\tlabel\n" + b"a" * 5000 + b"\tpos\n", "train", "line 2 is longer", max_line_bytes=1000)
    bad(b"a" * 5000, "train", "longer", max_line_bytes=1000)  # one huge line without a newline
    bad(b"not json\n", "train", "not valid JSON", fmt="jsonl")
    bad(b"[1, 2]\n", "train", "not a JSON object", fmt="jsonl")


def test_labels() -> None:
    bad(b"text\tlabel\nhi\tmaybe\n", "mapping.label", "not one of the task's labels")
    res, _ = parse(b"text\tlabel\nhi\tmaybe\nho\tsure\n", labels=[])  # no declared set: collected
    assert res.labels_seen == ["maybe", "sure"]
    with pytest.raises(InvalidInput, match="needs mapping.label"):
        parse(b"text\nhi\n", mapping=ColumnMapping(text="text"))


@pytest.mark.parametrize("value", [b"nan", b"inf", b"-inf", b"NaN", b"x", b"1e999"])
def test_regression_targets_must_be_finite_numbers(value: bytes) -> None:
    bad(b"text\tlabel\nhi\t" + value + b"\n", "mapping.label", task_type="regression", labels=[])


def test_text_pair_needs_a_pair_column() -> None:
    with pytest.raises(InvalidInput) as info:
        parse(b"a\tb\tlabel\nx\ty\tpos\n", task_type="text_pair", mapping=ColumnMapping(text="a", label="label"))
    assert info.value.field == "mapping.text_pair"


def test_row_cap() -> None:
    out = io.BytesIO()
    with pytest.raises(InvalidInput, match="more than 3 rows"):
        parse_split(io.BytesIO(b"text\tlabel\n" + b"x\tpos\n" * 10), out, split="train", fmt="tsv", mapping=M,
                    task_type="single_label", labels=["pos"], max_line_bytes=100, max_rows=3)


def test_infer_format() -> None:
    assert infer_format("a.TSV", None) == "tsv" and infer_format("a.json", None) == "jsonl"
    assert infer_format("whatever", "csv") == "csv"
    for name, explicit in (("a.parquet", None), ("a.tsv", "xlsx")):
        with pytest.raises(InvalidInput) as info:
            infer_format(name, explicit)
        assert info.value.field == "format"
