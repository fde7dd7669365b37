"""Parse an uploaded TSV/CSV/JSONL split into the canonical JSON Lines the trainer reads.

Everything a user can get wrong is checked here, before anything is stored or queued: encoding,
empty files, missing or empty mapped columns, labels outside the task's set, non-finite regression
targets and absurdly long lines. Errors name the field and, where useful, the line.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from registry.errors import InvalidInput

FORMATS = ("tsv", "csv", "jsonl")


@dataclass(frozen=True)
class ColumnMapping:
    """Which source column holds what. Names when the file has a header, 0-based indices otherwise."""

    text: str
    label: str | None = None
    text_pair: str | None = None
    response: str | None = None
    has_header: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "label": self.label, "text_pair": self.text_pair,
                "response": self.response, "has_header": self.has_header}


@dataclass
class ParsedSplit:
    rows: int
    label_counts: dict[str, int] = field(default_factory=dict)
    labels_seen: list[str] = field(default_factory=list)


def infer_format(filename: str, explicit: str | None) -> str:
    if explicit:
        if explicit not in FORMATS:
            raise InvalidInput(f"format must be one of {', '.join(FORMATS)}", field="format")
        return explicit
    lower = filename.lower()
    for fmt in FORMATS:
        if lower.endswith("." + fmt):
            return fmt
    if lower.endswith(".json"):
        return "jsonl"
    raise InvalidInput("cannot tell the file format from its name; pass format=tsv|csv|jsonl", field="format")


def _iter_lines(src: BinaryIO, split: str, max_line_bytes: int) -> Any:
    lineno = 0
    while True:
        raw = src.readline(max_line_bytes + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            raise InvalidInput(f"{split}: line {lineno} is longer than {max_line_bytes} bytes", field=split)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{split}: line {lineno} is not valid UTF-8", field=split) from exc
        if lineno == 1 and text.startswith("\ufeff"):
            text = text[1:]
        yield lineno, text


def _column_index(header: list[str] | None, ref: str, role: str) -> int:
    if header is not None:
        if ref in header:
            return header.index(ref)
        raise InvalidInput(f"column {ref!r} (mapped as {role}) is not in the header {header}",
                           field=f"mapping.{role}")
    try:
        idx = int(ref)
    except ValueError as exc:
        raise InvalidInput(f"the file has no header, so mapping.{role} must be a 0-based column index",
                           field=f"mapping.{role}") from exc
    if idx < 0:
        raise InvalidInput(f"mapping.{role} must be >= 0", field=f"mapping.{role}")
    return idx


def parse_split(
    src: BinaryIO,
    out: BinaryIO,
    *,
    split: str,
    fmt: str,
    mapping: ColumnMapping,
    task_type: str,
    labels: list[str],
    max_line_bytes: int,
    max_rows: int = 5_000_000,
) -> ParsedSplit:
    """Stream ``src`` into canonical JSONL in ``out``. ``labels`` empty = accept and collect any label."""
    roles = {"text": mapping.text, "label": mapping.label, "text_pair": mapping.text_pair,
             "response": mapping.response}
    needs_label = task_type in ("single_label", "text_pair", "regression")
    if needs_label and mapping.label is None:
        raise InvalidInput(f"a {task_type} task needs mapping.label", field="mapping.label")
    if task_type == "text_pair" and mapping.text_pair is None:
        raise InvalidInput("a text_pair task needs mapping.text_pair", field="mapping.text_pair")
    if task_type == "causal_lm" and mapping.response is None and mapping.text is None:
        raise InvalidInput("a causal_lm task needs mapping.text", field="mapping.text")
    active = {r: ref for r, ref in roles.items() if ref is not None}
    label_set = set(labels)
    counts: Counter[str] = Counter()
    rows = 0
    lines = _iter_lines(src, split, max_line_bytes)
    indices: dict[str, int] | None = None

    def emit(lineno: int, values: dict[str, Any]) -> None:
        nonlocal rows
        rec: dict[str, Any] = {"text": None, "text_pair": None, "label": None, "response": None}
        for role in active:
            v = values.get(role)
            if v is None or (isinstance(v, str) and not v.strip()):
                raise InvalidInput(f"{split}: line {lineno}: mapped column for {role} is missing or empty",
                                   field=f"mapping.{role}")
            rec[role] = v if role != "label" else v
        text = rec["text"]
        if not isinstance(text, str):
            raise InvalidInput(f"{split}: line {lineno}: text must be a string", field="mapping.text")
        if needs_label:
            lab = rec["label"]
            if task_type == "regression":
                try:
                    val = float(lab)
                except (TypeError, ValueError) as exc:
                    raise InvalidInput(f"{split}: line {lineno}: label {lab!r} is not a number",
                                       field="mapping.label") from exc
                if not math.isfinite(val):
                    raise InvalidInput(f"{split}: line {lineno}: label must be finite", field="mapping.label")
                rec["label"] = val
            else:
                lab = str(lab).strip() if not isinstance(lab, bool) else str(int(lab))
                if label_set and lab not in label_set:
                    raise InvalidInput(
                        f"{split}: line {lineno}: label {lab!r} is not one of the task's labels {sorted(label_set)}",
                        field="mapping.label",
                    )
                rec["label"] = lab
                counts[lab] += 1
        out.write(json.dumps(rec, ensure_ascii=False).encode("utf-8") + b"\n")
        rows += 1
        if rows > max_rows:
            raise InvalidInput(f"{split}: more than {max_rows} rows", field=split)

    if fmt == "jsonl":
        for lineno, line in lines:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{split}: line {lineno} is not valid JSON", field=split) from exc
            if not isinstance(obj, dict):
                raise InvalidInput(f"{split}: line {lineno} is not a JSON object", field=split)
            emit(lineno, {role: obj.get(ref) for role, ref in active.items()})
    else:
        delimiter = "\t" if fmt == "tsv" else ","
        for lineno, line in lines:
            if not line.strip():
                continue
            if fmt == "tsv":
                # Plain split: TSV corpora such as SST-2 contain bare quotes that csv would mangle.
                cells = line.rstrip("\r\n").split(delimiter)
            else:
                cells = next(csv.reader(io.StringIO(line), delimiter=delimiter), [])
            if indices is None:
                header = [c.strip() for c in cells] if mapping.has_header else None
                indices = {role: _column_index(header, ref, role) for role, ref in active.items()}
                if header is not None:
                    continue
            values = {role: (cells[i] if i < len(cells) else None) for role, i in indices.items()}
            emit(lineno, values)
    if rows == 0:
        raise InvalidInput(f"{split}: the file has no data rows", field=split)
    return ParsedSplit(rows=rows, label_counts=dict(counts), labels_seen=sorted(counts))


def canonical_rows(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
