"""Registering base models: files are copied into the store once, metadata read without torch."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from registry.basemodels import repository as repo
from registry.errors import Conflict, InvalidInput, NotFound
from registry.hashing import combine, sha256_file
from registry.models import BaseModel
from registry.names import validate_name
from registry.storage import ArtifactStore
from registry.storage.keys import blob_key
from registry.weights import inspect_safetensors, refuse_pickle_name

log = logging.getLogger(__name__)

FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
WEIGHT_RE = re.compile(r"^model(-\d{5}-of-\d{5})?\.safetensors$")
ALLOWED_EXTRA = re.compile(
    r"^(config\.json|generation_config\.json|model\.safetensors\.index\.json|tokenizer\.json|"
    r"tokenizer_config\.json|special_tokens_map\.json|added_tokens\.json|vocab\.txt|vocab\.json|"
    r"merges\.txt|tokenizer\.model|spiece\.model|sentencepiece\.bpe\.model|chat_template\.jinja)$"
)
DECODER_TYPES = {"gpt2", "llama", "mistral", "qwen2", "gpt_neox", "opt", "phi", "gemma", "gptj", "falcon"}
ENCODER_TYPES = {"bert", "roberta", "distilbert", "xlm-roberta", "electra", "deberta", "deberta-v2",
                 "albert", "mpnet", "camembert"}


def _first(config: dict[str, Any], *keys: str) -> int:
    for k in keys:
        v = config.get(k)
        if isinstance(v, int):
            return v
    raise InvalidInput(f"config.json has none of {', '.join(keys)}", field="files")


def register(
    session: Session,
    store: ArtifactStore,
    *,
    name: str,
    files: dict[str, Path],
    description: str = "",
    actor: str = "",
) -> BaseModel:
    name = validate_name(name, field="name")
    if repo.get_by_name(session, name) is not None:
        raise Conflict(f"base model {name!r} already exists", field="name")
    for fname in files:
        refuse_pickle_name(fname)
        if not FILE_NAME_RE.fullmatch(fname):
            raise InvalidInput(f"file name {fname!r} is not allowed", field="files")
        if not (WEIGHT_RE.fullmatch(fname) or ALLOWED_EXTRA.fullmatch(fname)):
            raise InvalidInput(f"unexpected file {fname!r} in a base model directory", field="files")
    if "config.json" not in files:
        raise InvalidInput("config.json is required", field="files")
    weight_files = sorted(f for f in files if WEIGHT_RE.fullmatch(f))
    if not weight_files:
        raise InvalidInput("model.safetensors is required (pickled .bin weights are refused)", field="files")
    try:
        config = json.loads(files["config.json"].read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput("config.json is not valid JSON", field="files") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise InvalidInput("config.json has no model_type", field="files")
    model_type = config["model_type"]
    archs = config.get("architectures") or [model_type]
    hidden = _first(config, "hidden_size", "d_model", "n_embd", "dim")
    layers = _first(config, "num_hidden_layers", "n_layer", "n_layers", "num_layers")

    num_params = 0
    for wf in weight_files:
        tensors = inspect_safetensors(files[wf])
        num_params += sum(t.numel for t in tensors.values())

    records: list[dict[str, Any]] = []
    for fname in sorted(files):
        path = files[fname]
        digest = sha256_file(path)
        records.append({"name": fname, "size": path.stat().st_size, "sha256": digest})
    by_name = {r["name"]: r for r in records}
    weights_sha = (
        by_name[weight_files[0]]["sha256"]
        if len(weight_files) == 1
        else combine(*(by_name[w]["sha256"] for w in weight_files))
    )
    # Upload first (create-only, verified); the row is inserted last so a failure leaves no row.
    for rec in records:
        store.put_file(blob_key(rec["sha256"]), files[rec["name"]], sha256=rec["sha256"])

    if model_type in DECODER_TYPES or any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs):
        task_types = ["causal_lm"]
    else:
        task_types = ["single_label", "text_pair", "regression"]
    bm = BaseModel(
        name=name,
        architecture=str(archs[0]),
        model_type=model_type,
        hidden_size=hidden,
        num_layers=layers,
        num_parameters=num_params,
        task_types=task_types,
        config=config,
        files=records,
        weights_sha256=weights_sha,
        size_bytes=sum(r["size"] for r in records),
        description=description,
        created_by=actor,
    )
    session.add(bm)
    session.flush()
    log.info("registered base model %s (%s, %d params, sha256 %s)", name, bm.architecture, num_params, weights_sha)
    return bm


def get_by_name(session: Session, name: str) -> BaseModel:
    name = validate_name(name, field="base_model")  # a malformed name is a 422, never a lookup
    bm = repo.get_by_name(session, name)
    if bm is None:
        raise NotFound(f"base model {name!r} does not exist", field="base_model")
    return bm
