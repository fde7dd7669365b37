"""Dataset uploads: parse + validate, store the canonical splits content-addressed, record once."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from sqlalchemy.orm import Session

from registry.datasets import repository as repo
from registry.datasets.parsing import ColumnMapping, infer_format, parse_split
from registry.errors import Conflict, InvalidInput, NotFound
from registry.hashing import combine, sha256_file
from registry.models import Dataset, Task
from registry.names import validate_name
from registry.storage import ArtifactStore
from registry.storage.keys import blob_key
from registry.tasks import repository as task_repo

log = logging.getLogger(__name__)


def upload(
    session: Session,
    store: ArtifactStore,
    *,
    task: Task,
    train: tuple[str, Path],
    dev: tuple[str, Path] | None,
    mapping: ColumnMapping,
    fmt: str | None,
    name: str | None,
    max_line_bytes: int,
    work_dir: Path,
    actor: str = "",
) -> tuple[Dataset, bool]:
    """Returns (dataset, created). The same canonical bytes uploaded twice are one dataset."""
    if name:
        name = validate_name(name, field="name")
    train_name, train_path = train
    source_format = infer_format(train_name, fmt)
    splits: dict[str, dict[str, object]] = {}
    label_counts: dict[str, dict[str, int]] = {}
    labels = list(task.labels)
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="dataset-") as tmp:
        outputs: dict[str, Path] = {}
        for split, item in (("train", train), ("dev", dev)):
            if item is None:
                continue
            fname, path = item
            split_fmt = infer_format(fname, fmt or source_format)
            out_path = Path(tmp) / f"{split}.jsonl"
            with open(path, "rb") as src, open(out_path, "wb") as out:
                parsed = parse_split(src, out, split=split, fmt=split_fmt, mapping=mapping, task_type=task.type,
                                     labels=labels, max_line_bytes=max_line_bytes)
            if task.type in ("single_label", "text_pair") and not labels:
                # The first dataset of a task without declared labels fixes its label set.
                if split == "train":
                    labels = parsed.labels_seen
                    if len(labels) < 2:
                        raise InvalidInput("the training split has fewer than two distinct labels",
                                           field="mapping.label")
            digest = sha256_file(out_path)
            splits[split] = {"sha256": digest, "rows": parsed.rows, "size": out_path.stat().st_size}
            label_counts[split] = parsed.label_counts
            outputs[split] = out_path
        if "dev" in label_counts and labels:
            extra = set(label_counts["dev"]) - set(labels)
            if extra:
                raise InvalidInput(f"dev split has labels not in the training split: {sorted(extra)}",
                                   field="mapping.label")
        sha = combine(*(str(splits[s]["sha256"]) for s in sorted(splits)))
        existing = repo.get_by_sha(session, task.id, sha)
        if existing is not None:
            return existing, False
        for split, out_path in outputs.items():
            digest = str(splits[split]["sha256"])
            store.put_file(blob_key(digest), out_path, sha256=digest)
    if labels != task.labels:
        if task_repo.version_count(session, task.id) > 0:
            raise Conflict("the task's labels are fixed once it has a version", field="labels")
        task.labels = labels
    ds = Dataset(
        task_id=task.id,
        name=name or f"{task.name}-{sha[:8]}",
        sha256=sha,
        source_filename=train_name[:255],
        source_format=source_format,
        source_sha256=sha256_file(train_path),
        column_mapping=mapping.as_dict(),
        splits=splits,
        label_counts=label_counts,
        num_rows=sum(int(str(s["rows"])) for s in splits.values()),
        created_by=actor,
    )
    session.add(ds)
    session.flush()
    log.info("dataset %d for task %s: %s rows, sha256 %s", ds.id, task.name, ds.num_rows, sha)
    return ds, True


def get(session: Session, dataset_id: int) -> Dataset:
    ds = repo.get(session, dataset_id)
    if ds is None:
        raise NotFound(f"dataset {dataset_id} does not exist", field="dataset_id")
    return ds
