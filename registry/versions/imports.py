"""Importing an adapter trained elsewhere (PEFT directory layout), without torch.

What is accepted: ``adapter_config.json`` + ``adapter_model.safetensors`` [+ ``head.safetensors``].
Pickle-based weights (``.bin``, ``.pt``, a pickle renamed ``.safetensors``) are refused with 422
and never deserialised: file names are checked first, then every weight file's first bytes and
header are read by :func:`registry.weights.inspect_safetensors` (header only, capped).

The adapter is validated against the *named* base model using tensor shapes only: the base
model's shapes are read from the safetensors header of its stored weight blob(s) (a ranged read;
the result is cached per sha256, blobs are immutable), and then

* LoRA: ``<module>.lora_A.weight`` is ``(r, in)`` and ``lora_B`` is ``(out, r)`` for a module the
  base model has, with ``(in, out)`` its weight's dimensions (either order: GPT-2's Conv1D stores
  them transposed), and the same ``r`` on both sides;
* IA3: ``<module>.ia3_l`` is ``(out, 1)`` or ``(1, in)`` of a module the base model has;
* bottleneck adapters: ``adapter.down.weight`` is ``(b, hidden)``, ``adapter.up.weight`` ``(hidden, b)``;
* prefix tuning: the prompt embedding's width is a multiple of ``2 * num_layers``;
* every layer index in a tensor name is below the base model's layer count;
* the head (``head.safetensors``) is ``(labels or 1, hidden)`` for the task.

The version is registered with ``origin="imported"``: no job and no dataset in its lineage. When
the config carries no adapter-registry metadata (a plain PEFT directory), the metadata is added
under ``auto_mapping.adapter_registry`` so the client can load it; the uploaded file's sha256 is
kept there as ``metadata.source_sha256``.
"""

from __future__ import annotations

import json
import logging
import re
import struct
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from registry.errors import BaseModelMismatch, Conflict, InvalidInput
from registry.hashing import sha256_file
from registry.methods import ARTIFACT_FORMAT_VERSION, META_NAMESPACE, validate_method_config
from registry.models import AdapterVersion, BaseModel, Task
from registry.storage import ArtifactStore
from registry.storage.keys import blob_key
from registry.versions import service
from registry.weights import MAX_HEADER_BYTES, TensorInfo, inspect_safetensors, refuse_pickle_name

log = logging.getLogger(__name__)

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
HEAD = "head.safetensors"
ALLOWED_FILES = (CONFIG, WEIGHTS, HEAD)
MAX_CONFIG_BYTES = 1024 * 1024
CLASSIFICATION = ("single_label", "text_pair")

_LAYER_RE = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
_LORA_RE = re.compile(r"^(?P<module>.+)\.lora_(?:embedding_)?(?P<ab>[AB])(?:\.weight)?$")
_IA3_RE = re.compile(r"^(?P<module>.+)\.ia3_l$")
_PEFT_PREFIXES = ("base_model.model.", "base_model.")

_shape_cache: dict[str, dict[str, tuple[int, ...]]] = {}
_shape_lock = threading.Lock()


@dataclass(frozen=True)
class ImportedFiles:
    """The uploaded files by their (plain) names."""

    paths: dict[str, Path]


# -- base model shapes, from the stored blob's header (no torch, no full download) ----------------
def _read_header_from_store(store: ArtifactStore, sha256: str) -> dict[str, tuple[int, ...]]:
    key = blob_key(sha256)
    with store.open_range(key, 0, 8) as f:
        head = f.read(8)
    if len(head) < 8:
        raise InvalidInput("the stored base model weights are not a safetensors file", field="base_model")
    (header_len,) = struct.unpack("<Q", head)
    if header_len > MAX_HEADER_BYTES:
        raise InvalidInput("the stored base model's safetensors header is too large", field="base_model")
    with store.open_range(key, 8, 8 + header_len) as f:
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput("the stored base model's safetensors header is not JSON", field="base_model") from exc
    header.pop("__metadata__", None)
    return {name: tuple(int(d) for d in info["shape"]) for name, info in header.items()}


def base_model_shapes(store: ArtifactStore, bm: BaseModel) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape for every weight file of a base model (cached: blobs never change)."""
    out: dict[str, tuple[int, ...]] = {}
    for f in bm.files:
        if not str(f["name"]).endswith(".safetensors"):
            continue
        sha = str(f["sha256"])
        with _shape_lock:
            cached = _shape_cache.get(sha)
        if cached is None:
            cached = _read_header_from_store(store, sha)
            with _shape_lock:
                _shape_cache[sha] = cached
        out.update(cached)
    if not out:
        raise InvalidInput(f"base model {bm.name!r} has no stored safetensors weights", field="base_model")
    return out


# -- config --------------------------------------------------------------------------------------
def _read_config(path: Path) -> dict[str, Any]:
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise InvalidInput(f"{CONFIG} is larger than {MAX_CONFIG_BYTES} bytes", field="files")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"{CONFIG} is not valid JSON", field="files") from exc
    if not isinstance(cfg, dict):
        raise InvalidInput(f"{CONFIG} must be a JSON object", field="files")
    return cfg


def _method_from_config(cfg: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """(method, normalised method_config, our metadata or None) from an adapter_config.json."""
    meta = (cfg.get("auto_mapping") or {}).get(META_NAMESPACE) if isinstance(cfg.get("auto_mapping"), dict) else None
    if isinstance(meta, dict):
        if meta.get("format_version") != ARTIFACT_FORMAT_VERSION:
            raise InvalidInput("unsupported adapter-registry artifact format_version", field="files")
        method = meta.get("method")
        if not isinstance(method, str):
            raise InvalidInput(f"{CONFIG}: adapter-registry metadata has no method", field="files")
        return method, validate_method_config(method, meta.get("method_config") or {}), meta
    peft_type = cfg.get("peft_type")
    if not isinstance(peft_type, str):
        raise InvalidInput(f"{CONFIG} has no peft_type (and no adapter-registry metadata)", field="files")
    if peft_type.upper() == "LORA":
        lcfg = {k: cfg[k] for k in ("r", "lora_alpha", "lora_dropout", "target_modules") if cfg.get(k) is not None}
        if isinstance(lcfg.get("target_modules"), str):
            raise InvalidInput("a regex target_modules cannot be imported; list the module names", field="files")
        return "lora", validate_method_config("lora", lcfg), None
    if peft_type.upper() == "IA3":
        icfg = {k: cfg[k] for k in ("target_modules", "feedforward_modules") if cfg.get(k) is not None}
        return "ia3", validate_method_config("ia3", icfg), None
    pcfg = {k: v for k, v in cfg.items() if k not in ("auto_mapping", "base_model_name_or_path", "revision",
                                                     "inference_mode", "task_type")}
    return "peft", validate_method_config("peft", pcfg), None


# -- shape checks --------------------------------------------------------------------------------
def _strip_peft(name: str) -> str:
    for p in _PEFT_PREFIXES:
        if name.startswith(p):
            return name[len(p):]
    return name


def _find_module(module: str, base: dict[str, tuple[int, ...]]) -> tuple[int, ...] | None:
    """The weight shape of ``module`` in the base model, tolerating a leading prefix on either side
    (``bert.encoder...`` vs ``encoder...``)."""
    exact = base.get(module + ".weight")
    if exact is not None:
        return exact
    for key, shape in base.items():
        if not key.endswith(".weight"):
            continue
        stem = key[: -len(".weight")]
        if stem.endswith("." + module) or module.endswith("." + stem):
            return shape
    return None


def _kv_dim(bm: BaseModel) -> int:
    """Per-layer key/value width: hidden size, scaled down for grouped-query attention."""
    cfg = bm.config or {}
    heads = cfg.get("num_attention_heads") or cfg.get("n_head")
    kv_heads = cfg.get("num_key_value_heads")
    if isinstance(heads, int) and isinstance(kv_heads, int) and 0 < kv_heads < heads:
        return int(bm.hidden_size) // heads * kv_heads
    return int(bm.hidden_size)


def check_shapes(
    adapter: dict[str, TensorInfo], head: dict[str, TensorInfo] | None, *, bm: BaseModel, task: Task,
    base: dict[str, tuple[int, ...]],
) -> None:
    """Refuse (422, field "files") an adapter whose tensors do not fit the base model and task."""
    hidden, layers = int(bm.hidden_size), int(bm.num_layers)

    def bad(msg: str) -> InvalidInput:
        return InvalidInput(f"adapter does not fit base model {bm.name!r} (hidden {hidden}, {layers} layers): {msg}",
                            field="files")

    if not adapter:
        raise bad("adapter_model.safetensors holds no tensors")
    lora: dict[str, dict[str, tuple[int, ...]]] = {}
    for raw_name, info in adapter.items():
        name = _strip_peft(raw_name)
        for m in _LAYER_RE.finditer(name):
            if int(m.group(1)) >= layers:
                raise bad(f"{raw_name} names layer {m.group(1)}")
        shape = info.shape
        if (lm := _LORA_RE.match(name)) is not None:
            lora.setdefault(lm.group("module"), {})[lm.group("ab")] = shape
        elif (im := _IA3_RE.match(name)) is not None:
            w = _find_module(im.group("module"), base)
            if w is None:
                raise bad(f"{raw_name} targets {im.group('module')!r}, which the base model does not have")
            if len(shape) != 2 or 1 not in shape or (max(shape) not in w and shape != (1, 1)):
                raise bad(f"{raw_name} has shape {list(shape)}; the module's weight is {list(w)}")
        elif name.endswith("adapter.down.weight"):
            if len(shape) != 2 or shape[1] != hidden:
                raise bad(f"{raw_name} has shape {list(shape)}, expected (bottleneck, {hidden})")
        elif name.endswith("adapter.up.weight"):
            if len(shape) != 2 or shape[0] != hidden:
                raise bad(f"{raw_name} has shape {list(shape)}, expected ({hidden}, bottleneck)")
        elif name.endswith("adapter.up.bias"):
            if shape != (hidden,):
                raise bad(f"{raw_name} has shape {list(shape)}, expected ({hidden},)")
        elif "prompt_encoder" in name and name.endswith("embedding.weight"):
            width = 2 * layers * _kv_dim(bm)
            if len(shape) != 2 or shape[1] != width:
                raise bad(f"{raw_name} has shape {list(shape)}; expected (virtual tokens, {width}) = 2 x "
                          f"{layers} layers x the key/value size")
    for module, ab in lora.items():
        if set(ab) != {"A", "B"}:
            raise bad(f"LoRA module {module!r} has lora_{''.join(ab)} only")
        a, b = ab["A"], ab["B"]
        if len(a) != 2 or len(b) != 2 or a[0] != b[1]:
            raise bad(f"LoRA module {module!r}: lora_A {list(a)} and lora_B {list(b)} disagree on the rank")
        w = _find_module(module, base)
        if w is None:
            raise bad(f"LoRA targets {module!r}, which the base model does not have")
        if len(w) != 2 or (a[1], b[0]) not in ((w[1], w[0]), (w[0], w[1])):
            raise bad(f"LoRA module {module!r}: lora_A {list(a)} / lora_B {list(b)} do not match the base "
                      f"weight {list(w)}")
    if task.type == "causal_lm":
        if head is not None:
            raise InvalidInput("a causal_lm task has no head; leave head.safetensors out", field="files")
        return
    if head is None:
        raise InvalidInput(f"a {task.type} task needs head.safetensors (the task head)", field="files")
    outputs = len(task.labels) if task.type in CLASSIFICATION else 1
    hw, hb = head.get("weight"), head.get("bias")
    if hw is None or hw.shape != (outputs, hidden):
        raise bad(f"head weight must be ({outputs}, {hidden}), got {list(hw.shape) if hw else None}")
    if hb is not None and hb.shape != (outputs,):
        raise bad(f"head bias must be ({outputs},), got {list(hb.shape)}")


# -- the import itself ---------------------------------------------------------------------------
def _inspect(path: Path, name: str) -> dict[str, TensorInfo]:
    """inspect_safetensors, with errors naming the uploaded file (not its spool name)."""
    try:
        return inspect_safetensors(path, field="files")
    except InvalidInput as exc:
        if path.name != name and exc.detail.startswith(path.name + ":"):
            exc.detail = name + exc.detail[len(path.name):]
            exc.args = (exc.detail,)
        raise


def check_file_names(names: list[str]) -> None:
    for n in names:
        refuse_pickle_name(n)
    unknown = sorted(set(names) - set(ALLOWED_FILES))
    if unknown:
        raise InvalidInput(f"unexpected files {unknown}; an adapter directory holds {', '.join(ALLOWED_FILES)}",
                           field="files")
    if len(set(names)) != len(names):
        raise InvalidInput("a file was given twice", field="files")
    for required in (CONFIG, WEIGHTS):
        if required not in names:
            raise InvalidInput(f"{required} is required", field="files")


@dataclass(frozen=True)
class PreparedImport:
    """Everything validated and stored; only the version row is left to write."""

    task_id: int
    labels: tuple[str, ...]
    base_model_id: int
    method: str
    method_config: dict[str, Any]
    records: list[dict[str, Any]]
    trainable_params: int
    total_params: int


def prepare_import(
    store: ArtifactStore,
    *,
    task: Task,
    base_model: BaseModel,
    files: dict[str, Path],
    parent: AdapterVersion | None = None,
    work_dir: Path | None = None,
) -> PreparedImport:
    """Validate an uploaded PEFT-format directory and put its files into the store (create-only).

    Needs no write transaction: the API runs it before taking the database's write lock, so
    hashing and storing a large upload never holds up other writers."""
    check_file_names(list(files))
    if task.type not in base_model.task_types:
        raise InvalidInput(f"base model {base_model.name!r} serves {base_model.task_types}, not {task.type}",
                           field="base_model")
    # Weights first: a pickle (even renamed) is refused here from its first bytes, never deserialised.
    adapter = _inspect(files[WEIGHTS], WEIGHTS)
    head = _inspect(files[HEAD], HEAD) if HEAD in files else None
    cfg = _read_config(files[CONFIG])
    method, method_config, meta = _method_from_config(cfg)
    if meta is not None:
        recorded = meta.get("base_model") or {}
        if recorded.get("sha256") and recorded["sha256"] != base_model.weights_sha256:
            raise BaseModelMismatch(
                f"the adapter records base sha256 {recorded['sha256']}, but {base_model.name!r} is "
                f"{base_model.weights_sha256}", field="base_model")
        if meta.get("task_type") not in (None, task.type):
            raise InvalidInput(f"the adapter is for a {meta['task_type']} task, {task.name} is {task.type}",
                               field="files")
        if meta.get("labels") not in (None, list(task.labels)):
            raise InvalidInput(f"the adapter's labels {meta['labels']} differ from the task's {task.labels}",
                               field="files")
    if parent is not None and parent.task_id != task.id:
        raise InvalidInput("the parent version belongs to another task", field="parent_version")
    check_shapes(adapter, head, bm=base_model, task=task, base=base_model_shapes(store, base_model))

    source_sha = sha256_file(files[CONFIG])
    config_path = files[CONFIG]
    tmp_dir: tempfile.TemporaryDirectory[str] | None = None
    if meta is None:  # a plain PEFT directory: add our metadata so the client can load it
        cfg.setdefault("auto_mapping", {})
        if not isinstance(cfg["auto_mapping"], dict):
            cfg["auto_mapping"] = {}
        cfg["auto_mapping"][META_NAMESPACE] = {
            "format_version": ARTIFACT_FORMAT_VERSION, "method": method, "method_config": method_config,
            "task_type": task.type, "labels": list(task.labels),
            "base_model": {"name": base_model.name, "sha256": base_model.weights_sha256,
                           "model_type": base_model.model_type, "hidden_size": base_model.hidden_size},
            "head": None if head is None else {"type": "mean_pool_linear",
                                               "num_outputs": len(task.labels) or 1},
            "metadata": {"origin": "imported", "source_sha256": source_sha},
        }
        tmp_dir = tempfile.TemporaryDirectory(dir=work_dir, prefix="import-")
        config_path = Path(tmp_dir.name) / CONFIG
        config_path.write_text(json.dumps(cfg, indent=2, sort_keys=True))
    try:
        paths = {CONFIG: config_path, WEIGHTS: files[WEIGHTS]} | ({HEAD: files[HEAD]} if HEAD in files else {})
        records: list[dict[str, Any]] = []
        for name in ALLOWED_FILES:
            if name in paths:
                p = paths[name]
                records.append({"name": name, "size": p.stat().st_size, "sha256": sha256_file(p)})
        # Blobs first (create-only, verified); the row last, in the caller's transaction.
        for rec in records:
            store.put_file(blob_key(rec["sha256"]), paths[rec["name"]], sha256=rec["sha256"])
    finally:
        if tmp_dir is not None:
            tmp_dir.cleanup()
    trainable = sum(t.numel for t in adapter.values()) + (sum(t.numel for t in head.values()) if head else 0)
    return PreparedImport(task_id=task.id, labels=tuple(task.labels), base_model_id=base_model.id, method=method,
                          method_config=method_config, records=records, trainable_params=trainable,
                          total_params=int(base_model.num_parameters) + trainable)


def register_prepared(
    session: Session,
    prepared: PreparedImport,
    *,
    task: Task,
    base_model: BaseModel,
    metrics: dict[str, Any] | None = None,
    description: str = "",
    parent: AdapterVersion | None = None,
    actor: str = "",
) -> AdapterVersion:
    """Register a prepared import as the task's next version (in the caller's transaction)."""
    if task.id != prepared.task_id or tuple(task.labels) != prepared.labels or base_model.id != prepared.base_model_id:
        raise Conflict("the task changed while the adapter was being imported; try again", field="task")
    version = service.register(
        session, task=task, base_model=base_model, method=prepared.method, method_config=prepared.method_config,
        files=prepared.records, metrics=dict(metrics or {}), trainable_params=prepared.trainable_params,
        total_params=prepared.total_params, code_version="imported", origin="imported", parent=parent,
        actor=actor, description=description,
    )
    log.info("imported %s v%d (%s) on %s", task.name, version.number, prepared.method, base_model.name)
    return version


def import_adapter(
    session: Session,
    store: ArtifactStore,
    *,
    task: Task,
    base_model: BaseModel,
    files: dict[str, Path],
    metrics: dict[str, Any] | None = None,
    description: str = "",
    parent: AdapterVersion | None = None,
    actor: str = "",
    work_dir: Path | None = None,
) -> AdapterVersion:
    """Validate, store and register in one go (service callers: CLI scripts, tests)."""
    prepared = prepare_import(store, task=task, base_model=base_model, files=files, parent=parent,
                              work_dir=work_dir)
    return register_prepared(session, prepared, task=task, base_model=base_model, metrics=metrics,
                             description=description, parent=parent, actor=actor)
