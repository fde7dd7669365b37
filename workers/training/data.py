"""Canonical dataset splits (JSON Lines) -> tokenised examples -> dynamically padded batches.

One row per line: ``{"text": str, "text_pair": str|null, "label": str|float|null,
"response": str|null}``. ``label`` is the label *name* for classification and a number for
regression; causal LM rows use ``text`` as the prompt and ``response`` as the target (when
``response`` is null the whole text is the target).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from registry.errors import InvalidInput

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Example:
    text: str
    text_pair: str | None = None
    label: str | float | None = None
    response: str | None = None


def read_jsonl(path: Path, *, task_type: str, labels: list[str], max_rows: int | None = None) -> list[Example]:
    """Read and check a canonical split; errors name the file line."""
    rows: list[Example] = []
    label_set = set(labels)
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if max_rows is not None and len(rows) >= max_rows:
                break
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise InvalidInput(f"{path.name} line {lineno}: not JSON ({exc})", field="dataset") from exc
            rows.append(_row(obj, lineno, path.name, task_type, label_set))
    if not rows:
        raise InvalidInput(f"{path.name} has no rows", field="dataset")
    return rows


def _row(obj: Any, lineno: int, fname: str, task_type: str, label_set: set[str]) -> Example:
    where = f"{fname} line {lineno}"
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise InvalidInput(f"{where}: needs a string 'text'", field="dataset")
    pair = obj.get("text_pair")
    label = obj.get("label")
    response = obj.get("response")
    if pair is not None and not isinstance(pair, str):
        raise InvalidInput(f"{where}: 'text_pair' must be a string or null", field="dataset")
    if task_type == "text_pair" and pair is None:
        raise InvalidInput(f"{where}: text_pair task needs 'text_pair'", field="dataset")
    if task_type in ("single_label", "text_pair"):
        if not isinstance(label, str) or label not in label_set:
            raise InvalidInput(f"{where}: label {label!r} is not one of the task's labels", field="dataset")
    elif task_type == "regression":
        if isinstance(label, bool) or not isinstance(label, int | float) or not math.isfinite(label):
            raise InvalidInput(f"{where}: regression label must be a finite number", field="dataset")
        label = float(label)
    elif task_type == "causal_lm":
        if response is not None and not isinstance(response, str):
            raise InvalidInput(f"{where}: 'response' must be a string or null", field="dataset")
    return Example(text=obj["text"], text_pair=pair, label=label, response=response)


def encode(
    examples: list[Example],
    tokenizer: Any,
    *,
    task_type: str,
    labels: list[str],
    max_length: int,
    token_types: bool,
) -> list[dict[str, Any]]:
    """Tokenise without padding; each item holds python lists plus ``target``."""
    if task_type == "causal_lm":
        return [_encode_causal(ex, tokenizer, max_length) for ex in examples]
    index = {name: i for i, name in enumerate(labels)}
    texts = [ex.text for ex in examples]
    pairs = [ex.text_pair or "" for ex in examples] if task_type == "text_pair" else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length, return_token_type_ids=token_types)
    items: list[dict[str, Any]] = []
    for i, ex in enumerate(examples):
        item: dict[str, Any] = {"input_ids": enc["input_ids"][i]}
        if token_types:
            item["token_type_ids"] = enc["token_type_ids"][i]
        item["target"] = float(ex.label) if task_type == "regression" else index[str(ex.label)]  # type: ignore[arg-type]
        items.append(item)
    return items


def _encode_causal(ex: Example, tokenizer: Any, max_length: int) -> dict[str, Any]:
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    eos = [eos_id] if eos_id is not None else []
    prompt = bos + tokenizer(ex.text, add_special_tokens=False)["input_ids"]
    if ex.response is None:
        ids = (prompt + eos)[:max_length]
        target = list(ids)
    else:
        resp = tokenizer(ex.response, add_special_tokens=False)["input_ids"] + eos
        ids = (prompt + resp)[:max_length]
        target = ([IGNORE_INDEX] * len(prompt) + resp)[:max_length]
    return {"input_ids": ids, "target": target}


def collate(items: list[dict[str, Any]], *, pad_id: int, task_type: str) -> dict[str, torch.Tensor]:
    """Pad to the longest item of the batch (dynamic padding, right side)."""
    width = max(len(it["input_ids"]) for it in items)
    n = len(items)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    types = torch.zeros((n, width), dtype=torch.long) if "token_type_ids" in items[0] else None
    if task_type == "causal_lm":
        targets = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    elif task_type == "regression":
        targets = torch.tensor([it["target"] for it in items], dtype=torch.float32)
    else:
        targets = torch.tensor([it["target"] for it in items], dtype=torch.long)
    for i, it in enumerate(items):
        ln = len(it["input_ids"])
        input_ids[i, :ln] = torch.tensor(it["input_ids"])
        mask[i, :ln] = 1
        if types is not None:
            types[i, :ln] = torch.tensor(it["token_type_ids"])
        if task_type == "causal_lm":
            targets[i, :ln] = torch.tensor(it["target"])
    batch = {"input_ids": input_ids, "attention_mask": mask, "targets": targets}
    if types is not None:
        batch["token_type_ids"] = types
    return batch


def batches(
    items: list[dict[str, Any]],
    batch_size: int,
    *,
    generator: torch.Generator | None,
    pad_id: int,
    task_type: str,
) -> Iterator[dict[str, torch.Tensor]]:
    """Shuffled (when ``generator`` is given) batches in file order otherwise; no sorting."""
    order = torch.randperm(len(items), generator=generator).tolist() if generator is not None \
        else list(range(len(items)))
    for i in range(0, len(order), batch_size):
        yield collate([items[j] for j in order[i : i + batch_size]], pad_id=pad_id, task_type=task_type)
