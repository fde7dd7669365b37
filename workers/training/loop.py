"""The training loop: ``run_training(spec, on_progress=, should_stop=) -> TrainResult``.

Pure torch/transformers; no FastAPI, SQLAlchemy or Celery. AdamW with linear warm-up and
decay, dynamic padding, parameter groups (adapter at ``learning_rate``, head at
``head_learning_rate``, default 10x; the adapters' zero-initialised up-projections at
``up_lr_ratio`` x ``learning_rate``, default 1x), evaluation on the dev split every ``eval_every`` steps
and at the end. ``should_stop()`` is checked before every step; when it returns True the loop
raises :class:`TrainingCancelled` and writes nothing.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from registry.errors import InvalidInput
from workers.training.data import batches, encode, read_jsonl
from workers.training.metrics import classification_metrics, regression_metrics

DEFAULT_HYPERPARAMETERS: dict[str, Any] = {
    "learning_rate": 1e-3,
    "head_learning_rate": None,  # None: 10 x learning_rate
    "up_lr_ratio": 1.0,  # lr of up-projections (bottleneck ``up``, LoRA ``lora_B``) / learning_rate
    "epochs": 3,
    "batch_size": 32,
    "max_length": 128,
    "max_steps": None,
    "warmup_ratio": 0.06,
    "weight_decay": 0.0,
    "seed": 42,
    "eval_every": None,  # None: at the end of every epoch
    "max_train_rows": None,
}
log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.5
EVAL_BATCH_SIZE = 64


class TrainingCancelled(Exception):
    """``should_stop()`` returned True; nothing was written."""

    def __init__(self, step: int) -> None:
        super().__init__(f"training cancelled at step {step}")
        self.step = step


@dataclass(frozen=True)
class TrainSpec:
    base_dir: Path
    base_sha256: str
    base_name: str
    task_type: str
    labels: list[str]
    train_path: Path
    dev_path: Path | None
    method: str
    method_config: dict[str, Any]
    hyperparameters: dict[str, Any]
    out_dir: Path
    parent_adapter_dir: Path | None = None
    device: str = "auto"


@dataclass
class Progress:
    step: int
    total_steps: int
    epoch: float
    loss: float | None
    lr: float
    eval: dict[str, float] | None = None


@dataclass
class TrainResult:
    metrics: dict[str, float]
    trainable_params: int
    total_params: int
    files: list[Path]
    history: list[dict[str, Any]] = field(default_factory=list)


def resolve_hyperparameters(hp: dict[str, Any] | None) -> dict[str, Any]:
    """Fill defaults; refuse unknown names (the API validates ranges with its own schema)."""
    hp = dict(hp or {})
    unknown = sorted(set(hp) - set(DEFAULT_HYPERPARAMETERS))
    if unknown:
        raise InvalidInput(f"unknown hyper-parameters {unknown}", field=f"hyperparameters.{unknown[0]}")
    out = {**DEFAULT_HYPERPARAMETERS, **{k: v for k, v in hp.items() if v is not None}}
    if out["head_learning_rate"] is None:
        out["head_learning_rate"] = 10 * float(out["learning_rate"])
    for key in ("batch_size", "max_length"):
        if int(out[key]) < 1:
            raise InvalidInput(f"{key} must be >= 1", field=f"hyperparameters.{key}")
    if not 0 < float(out["up_lr_ratio"]) <= 1000:
        raise InvalidInput("up_lr_ratio must be in (0, 1000]", field="hyperparameters.up_lr_ratio")
    if not 0 <= float(out["warmup_ratio"]) < 1:
        raise InvalidInput("warmup_ratio must be in [0, 1)", field="hyperparameters.warmup_ratio")
    if float(out["epochs"]) <= 0:
        raise InvalidInput("epochs must be > 0", field="hyperparameters.epochs")
    return out


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _build_model(spec: TrainSpec, device: torch.device) -> Any:
    from registry.methods import read_adapter_meta, validate_method_config
    from registry.methods.model import build_adapted_model, load_adapted_model

    if spec.parent_adapter_dir is None:
        return build_adapted_model(
            spec.base_dir, task_type=spec.task_type, labels=list(spec.labels), method=spec.method,
            method_config=spec.method_config, base_sha256=spec.base_sha256, base_name=spec.base_name,
            device=device,
        )
    # Warm start (continual training): same method and config as the parent. An empty
    # method_config inherits the parent's. The head is kept for labels the parent knew.
    parent = read_adapter_meta(spec.parent_adapter_dir)
    if parent["method"] != spec.method:
        raise InvalidInput(f"parent adapter uses method {parent['method']!r}, not {spec.method!r}", field="method")
    # both normalised: a parent written before an option existed records no value for it
    parent["method_config"] = validate_method_config(spec.method, parent["method_config"] or {})
    if spec.method_config and validate_method_config(spec.method, spec.method_config) != parent["method_config"]:
        raise InvalidInput("method_config differs from the parent adapter's", field="method_config")
    if parent["task_type"] != spec.task_type:
        raise InvalidInput(f"parent adapter is for task type {parent['task_type']!r}", field="task_type")
    loaded = load_adapted_model(spec.base_dir, spec.parent_adapter_dir, base_sha256=spec.base_sha256,
                                device=str(device))
    if list(spec.labels) == list(loaded.labels):
        return loaded
    model = build_adapted_model(
        spec.base_dir, task_type=spec.task_type, labels=list(spec.labels), method=spec.method,
        method_config=parent["method_config"], base_sha256=spec.base_sha256, base_name=spec.base_name,
        device=device,
    )
    with torch.no_grad():
        src = loaded.adapter_parameters()
        for name, p in model.adapter_parameters().items():
            p.copy_(src[name])
        old = {name: i for i, name in enumerate(loaded.labels)}
        assert model.head is not None and loaded.head is not None  # classification: both have heads
        new_head, old_head = model.head.linear, loaded.head.linear
        for i, name in enumerate(model.labels):
            if name in old:
                new_head.weight[i].copy_(old_head.weight[old[name]])
                new_head.bias[i].copy_(old_head.bias[old[name]])
    return model


def is_up_projection(name: str) -> bool:
    """The zero-initialised "B" half of a low-rank update: a bottleneck adapter's ``up`` (Houlsby
    et al. 2019) and LoRA's ``lora_B`` (Hu et al. 2021). LoRA+ (Hayou et al. 2024, "LoRA+:
    Efficient Low Rank Adaptation of Large Models") shows that with one lr for both halves the
    zero-initialised half learns too slowly, and gives it ``up_lr_ratio`` x the lr."""
    return ".adapter.up." in f".{name}" or ".lora_B." in f".{name}"


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


@torch.no_grad()
def evaluate(model: Any, items: list[dict[str, Any]], *, pad_id: int) -> dict[str, float]:
    was_training = model.training
    model.eval()
    device = model.device
    losses: list[float] = []
    weights: list[int] = []
    preds: list[torch.Tensor] = []
    golds: list[torch.Tensor] = []
    try:
        for batch in batches(items, EVAL_BATCH_SIZE, generator=None, pad_id=pad_id, task_type=model.task_type):
            batch = {k: v.to(device) for k, v in batch.items()}
            targets = batch.pop("targets")
            logits = model(**batch)
            loss = model.compute_loss(logits, targets)
            if model.task_type == "causal_lm":
                n = int((targets[:, 1:] != -100).sum())
            else:
                n = int(targets.shape[0])
                preds.append((logits if model.task_type == "regression" else logits.argmax(-1)).cpu())
                golds.append(targets.cpu())
            losses.append(float(loss) * n)
            weights.append(n)
    finally:
        model.train(was_training)
    mean_loss = sum(losses) / max(1, sum(weights))
    out = {"eval_loss": mean_loss}
    if model.task_type == "causal_lm":
        out["perplexity"] = math.exp(min(mean_loss, 50.0))
    elif model.task_type == "regression":
        out.update(regression_metrics(torch.cat(preds), torch.cat(golds)))
    else:
        out.update(classification_metrics(torch.cat(preds), torch.cat(golds), len(model.labels)))
    return out


def run_training(
    spec: TrainSpec,
    *,
    on_progress: Callable[[Progress], None],
    should_stop: Callable[[], bool],
) -> TrainResult:
    hp = resolve_hyperparameters(spec.hyperparameters)
    device = resolve_device(spec.device)
    # rows first: a bad file fails before the base model is loaded
    train_rows = read_jsonl(spec.train_path, task_type=spec.task_type, labels=list(spec.labels),
                            max_rows=hp["max_train_rows"])
    dev_rows = read_jsonl(spec.dev_path, task_type=spec.task_type, labels=list(spec.labels)) \
        if spec.dev_path is not None else None
    seed_everything(int(hp["seed"]))
    model = _build_model(spec, device)
    model.train()
    enc_kw = {"task_type": spec.task_type, "labels": list(spec.labels), "max_length": int(hp["max_length"]),
              "token_types": model.uses_token_types}
    train_items = encode(train_rows, model.tokenizer, **enc_kw)
    dev_items = encode(dev_rows, model.tokenizer, **enc_kw) if dev_rows is not None else None
    pad_id = int(model.tokenizer.pad_token_id)

    batch_size = int(hp["batch_size"])
    steps_per_epoch = math.ceil(len(train_items) / batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * float(hp["epochs"])))
    if hp["max_steps"] is not None:
        total_steps = min(total_steps, int(hp["max_steps"]))
    warmup = int(total_steps * float(hp["warmup_ratio"]))
    eval_every = int(hp["eval_every"]) if hp["eval_every"] else steps_per_epoch

    named = [(n, p) for n, p in model.backbone.named_parameters() if p.requires_grad]
    adapter_params = [p for _, p in named]
    up_params = [p for n, p in named if is_up_projection(n)]
    other_params = [p for n, p in named if not is_up_projection(n)]
    head_params = [p for p in model.head.parameters()] if model.head is not None else []
    base_lr = float(hp["learning_rate"])
    groups = []
    for params, lr in ((other_params, base_lr), (up_params, base_lr * float(hp["up_lr_ratio"])),
                       (head_params, hp["head_learning_rate"])):
        if params:
            decay = [p for p in params if p.ndim >= 2]
            no_decay = [p for p in params if p.ndim < 2]
            groups.append({"params": decay, "lr": float(lr), "weight_decay": float(hp["weight_decay"])})
            groups.append({"params": no_decay, "lr": float(lr), "weight_decay": 0.0})
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(warmup, total_steps))
    generator = torch.Generator().manual_seed(int(hp["seed"]))

    log.info(
        "training %s on %s (%s): %d train rows, %s dev rows, %d steps, %d trainable / %d params, device %s",
        spec.method, spec.base_name, spec.task_type, len(train_items),
        len(dev_items) if dev_items is not None else 0, total_steps,
        model.trainable_parameter_count(), model.total_parameter_count(), device,
    )
    history: list[dict[str, Any]] = []
    last_eval: dict[str, float] | None = None
    step = 0
    running: list[float] = []
    last_report = 0.0
    started = time.monotonic()
    while step < total_steps:
        for batch in batches(train_items, batch_size, generator=generator, pad_id=pad_id,
                             task_type=spec.task_type):
            if step >= total_steps:
                break
            if should_stop():
                log.info("cancelled at step %d", step)
                raise TrainingCancelled(step)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            targets = batch.pop("targets")
            logits = model(**batch)
            loss = model.compute_loss(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(adapter_params + head_params, 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            running.append(float(loss.detach()))
            evaluated: dict[str, float] | None = None
            if dev_items is not None and (step % eval_every == 0 or step == total_steps):
                evaluated = last_eval = evaluate(model, dev_items, pad_id=pad_id)
            now = time.monotonic()
            if evaluated is not None or step == total_steps or step == 1 or now - last_report >= PROGRESS_INTERVAL_S:
                mean_loss = sum(running) / len(running)
                lr = float(optimizer.param_groups[0]["lr"])
                epoch = step / steps_per_epoch
                history.append({"step": step, "epoch": epoch, "loss": mean_loss, "lr": lr,
                                "elapsed_s": now - started, **({"eval": evaluated} if evaluated else {})})
                on_progress(Progress(step=step, total_steps=total_steps, epoch=epoch, loss=mean_loss, lr=lr,
                                     eval=evaluated))
                running.clear()
                last_report = now
    if should_stop():
        raise TrainingCancelled(step)

    metrics: dict[str, float] = {"train_loss": history[-1]["loss"] if history else float("nan"),
                                 "train_steps": float(step), "train_seconds": time.monotonic() - started}
    if last_eval is not None:
        metrics.update(last_eval)
    log.info("finished after %d steps: %s", step, {k: round(v, 4) for k, v in metrics.items()})
    files = model.save(
        spec.out_dir,
        metadata={
            "base_name": spec.base_name,
            "hyperparameters": hp,
            "metrics": metrics,
            "train_rows": len(train_items),
            "dev_rows": len(dev_items) if dev_items is not None else 0,
            "warm_start": spec.parent_adapter_dir is not None,
        },
    )
    return TrainResult(
        metrics=metrics,
        trainable_params=model.trainable_parameter_count(),
        total_params=model.total_parameter_count(),
        files=files,
        history=history,
    )
