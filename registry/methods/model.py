"""The adapted model: frozen base + adapter (ours or PEFT's) + task head + tokenizer.

Artifact layout written by :meth:`AdaptedModel.save` (PEFT layout):

* ``adapter_config.json``: for PEFT tuner methods (``lora``, ``ia3`` and ``peft`` with a
  non-prompt type) the PEFT config exactly as PEFT writes it, so ``PeftModel.from_pretrained``
  loads the directory unchanged; for the others ``{"peft_type": null, ...}``. In every case our
  metadata (method, method_config, base_model {name, sha256, ...}, task_type, labels, metadata,
  head) lives under ``auto_mapping.adapter_registry``: ``auto_mapping`` is a free-form dict field
  of every PEFT config, so PEFT 0.21 accepts it without a warning (an unknown top-level key
  would be dropped with an "upgrade PEFT" warning). Read it with
  :func:`registry.methods.read_adapter_meta`.
* ``adapter_model.safetensors``: PEFT tuner methods: ``get_peft_model_state_dict`` (PEFT's key
  names); bottleneck, prefix tuning and ``mam``: every trainable tensor of the backbone under
  its module path.
* ``head.safetensors``: ``weight`` and ``bias`` of the task head (absent for ``causal_lm``).

Weights are only read with safetensors: never ``torch.load``; ``.bin`` files are refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from registry.errors import BaseModelMismatch, InvalidInput
from registry.methods import (
    ARTIFACT_FORMAT_VERSION,
    META_NAMESPACE,
    TASK_TYPES,
    read_adapter_meta,
    validate_method_config,
)
from registry.methods.configs import BOTTLENECK_METHODS

ENCODER_ONLY_TYPES = (
    "bert", "roberta", "xlm-roberta", "distilbert", "electra", "albert", "deberta", "deberta-v2", "mpnet",
)
CLASSIFICATION_TASKS = ("single_label", "text_pair")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class TaskHead(nn.Module):
    """Masked mean pooling over the last hidden states, then one linear layer."""

    def __init__(self, hidden: int, num_outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, num_outputs)
        nn.init.normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)  # (B, T, 1)
        pooled = (hidden_states * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, C)
        return self.linear(pooled)  # (B, n)


def _check_base_dir(base_dir: Path) -> None:
    if not (base_dir / "config.json").is_file():
        raise InvalidInput(f"base model directory has no config.json: {base_dir}", field="base_model")
    has_st = (base_dir / "model.safetensors").is_file() or (base_dir / "model.safetensors.index.json").is_file()
    if not has_st:
        pickles = sorted(p.name for p in base_dir.iterdir() if p.suffix in _PICKLE_SUFFIXES)
        detail = f" (found pickled weights {pickles}, which are refused)" if pickles else ""
        raise InvalidInput(
            f"base model directory has no model.safetensors{detail}; weights are read only with safetensors",
            field="base_model",
        )


def _check_adapter_dir(adapter_dir: Path) -> None:
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        pickles = sorted(p.name for p in adapter_dir.iterdir() if p.suffix in _PICKLE_SUFFIXES) \
            if adapter_dir.is_dir() else []
        detail = f" (found pickled weights {pickles}, which are refused)" if pickles else ""
        raise InvalidInput(f"adapter directory has no adapter_model.safetensors{detail}", field="adapter")


def _validate_task(task_type: str, labels: list[str]) -> list[str]:
    if task_type not in TASK_TYPES:
        raise InvalidInput(f"unknown task type {task_type!r}; known: {', '.join(TASK_TYPES)}", field="task_type")
    if task_type in CLASSIFICATION_TASKS:
        if not isinstance(labels, list | tuple) or len(labels) < 2:
            raise InvalidInput("classification needs at least two labels", field="labels")
        if not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels):
            raise InvalidInput("labels must be distinct non-empty strings", field="labels")
        return list(labels)
    if labels:
        raise InvalidInput(f"task type {task_type!r} takes no labels", field="labels")
    return []


class AdaptedModel(nn.Module):
    """A frozen base model with one adapter and one task head.

    ``forward`` returns logits: ``(B, n_labels)`` for classification, ``(B,)`` for regression,
    ``(B, T, V)`` for causal LM. Only adapter (and head) parameters have ``requires_grad``.
    """

    def __init__(
        self,
        *,
        base: nn.Module,
        backbone: nn.Module,
        head: TaskHead | None,
        tokenizer: Any,
        task_type: str,
        labels: list[str],
        method: str,
        method_config: dict[str, Any],
        base_info: dict[str, Any],
        peft_kind: str | None,
    ) -> None:
        super().__init__()
        self.base = base
        self.backbone = backbone
        self.head = head
        self.tokenizer = tokenizer
        self.task_type = task_type
        self.labels = labels
        self.method = method
        self.method_config = method_config
        self.base_info = base_info
        self.peft_kind = peft_kind  # "tuner", "prompt" or None
        self.uses_token_types = int(getattr(base.config, "type_vocab_size", 0) or 0) > 1
        self._merged = False
        # What trains is decided once, when the model is built; cached for fast weight swaps.
        self._adapter_params = {n: p for n, p in backbone.named_parameters() if p.requires_grad}
        self._peft_key_map: dict[str, nn.Parameter] | None = None

    # ------------------------------------------------------------------ parameters

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        """Trainable parameters of the backbone (adapter, and LayerNorms if configured), by name."""
        return dict(self._adapter_params)

    def _peft_keys(self) -> dict[str, nn.Parameter] | None:
        """PEFT state-dict key -> parameter, when PEFT's keys are exactly our parameter names
        without the adapter name (true for LoRA/(IA)^3 and most tuners); None otherwise."""
        if self._peft_key_map is None:
            from peft import get_peft_model_state_dict

            keys = set(get_peft_model_state_dict(self.backbone))
            mapping = {n.replace(".default", ""): p for n, p in self._adapter_params.items()}
            self._peft_key_map = mapping if set(mapping) == keys else {}
        return self._peft_key_map or None

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def total_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ forward

    def tokenize(
        self, texts: list[str], pairs: list[str] | None = None, *, max_length: int = 128
    ) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            texts,
            pairs,
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
            return_token_type_ids=self.uses_token_types,
        )
        return {k: v.to(self.device) for k, v in enc.items()}

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self.uses_token_types and self.peft_kind != "prompt":
            # (PEFT's prompt-learning models drop token type ids anyway, with a warning)
            kwargs["token_type_ids"] = token_type_ids
        if self.task_type == "causal_lm" and self.peft_kind != "prompt":
            kwargs["use_cache"] = False
        out = self.backbone(**kwargs)
        seq = input_ids.shape[1]
        # PEFT's prompt tuning / P-tuning prepend virtual tokens to the outputs: drop them
        if self.task_type == "causal_lm":
            return out.logits[:, -seq:]  # (B, T, V)
        assert self.head is not None
        logits = self.head(out.last_hidden_state[:, -seq:], attention_mask)
        return logits.squeeze(-1) if self.task_type == "regression" else logits

    def compute_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (classification; causal LM with -100 = ignored), MSE (regression)."""
        if self.task_type == "regression":
            return nn.functional.mse_loss(logits.float(), targets.float())
        if self.task_type == "causal_lm":
            shift_logits = logits[:, :-1].reshape(-1, logits.size(-1))
            shift_labels = targets[:, 1:].reshape(-1)
            return nn.functional.cross_entropy(shift_logits.float(), shift_labels, ignore_index=-100)
        return nn.functional.cross_entropy(logits.float(), targets)

    @torch.no_grad()
    def predict(
        self,
        texts: list[str] | list[tuple[str, str]],
        *,
        batch_size: int = 32,
        max_length: int = 128,
        max_new_tokens: int = 32,
    ) -> list[str | float]:
        """Label names (classification), floats (regression) or generated text (causal LM)."""
        was_training = self.training
        self.eval()
        try:
            if self.task_type == "causal_lm":
                return [self._generate(str(t), max_new_tokens, max_length) for t in texts]
            results: list[str | float] = []
            for i in range(0, len(texts), batch_size):
                chunk = texts[i : i + batch_size]
                if self.task_type == "text_pair":
                    if not all(isinstance(t, tuple | list) and len(t) == 2 for t in chunk):
                        raise InvalidInput("text_pair prediction needs (text, text_pair) tuples", field="texts")
                    enc = self.tokenize([t[0] for t in chunk], [t[1] for t in chunk], max_length=max_length)
                else:
                    enc = self.tokenize([str(t) for t in chunk], max_length=max_length)
                logits = self(**enc)
                if self.task_type == "regression":
                    results.extend(float(x) for x in logits.float().cpu())
                else:
                    results.extend(self.labels[int(j)] for j in logits.argmax(-1).cpu())
            return results
        finally:
            self.train(was_training)

    def _generate(self, prompt: str, max_new_tokens: int, max_length: int) -> str:
        tok = self.tokenizer
        ids = tok(prompt, add_special_tokens=False)["input_ids"][-max_length:]
        if tok.bos_token_id is not None:
            ids = [tok.bos_token_id, *ids]
        stop = {x for x in (tok.eos_token_id, tok.sep_token_id) if x is not None}
        new: list[int] = []
        for _ in range(max_new_tokens):
            x = torch.tensor([ids + new], device=self.device)
            logits = self(x, torch.ones_like(x))
            nxt = int(logits[0, -1].argmax())
            if nxt in stop:
                break
            new.append(nxt)
        return str(tok.decode(new, skip_special_tokens=True))

    # ------------------------------------------------------------------ merging

    def merge(self) -> None:
        """Fold the adapter into the base weights (LoRA, (IA)^3 and other PEFT tuner methods)."""
        if self.peft_kind != "tuner":
            raise InvalidInput(f"merging is not supported for method {self.method!r}", field="method")
        if not self._merged:
            self.backbone.merge_adapter()  # type: ignore[operator]
            self._merged = True

    def unmerge(self) -> None:
        if self.peft_kind != "tuner":
            raise InvalidInput(f"merging is not supported for method {self.method!r}", field="method")
        if self._merged:
            self.backbone.unmerge_adapter()  # type: ignore[operator]
            self._merged = False

    # ------------------------------------------------------------------ save / load

    def _meta(self, metadata: dict[str, Any]) -> dict[str, Any]:
        import peft
        import transformers

        return {
            "format_version": ARTIFACT_FORMAT_VERSION,
            "method": self.method,
            "method_config": self.method_config,
            "task_type": self.task_type,
            "labels": self.labels,
            "base_model": self.base_info,
            "head": None if self.head is None else {
                "type": "mean_pool_linear",
                "num_outputs": self.head.linear.out_features,
            },
            "metadata": metadata,
            "library": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "peft": peft.__version__},
        }

    def _adapter_state(self) -> dict[str, torch.Tensor]:
        if self.peft_kind == "tuner":
            from peft import get_peft_model_state_dict

            state = get_peft_model_state_dict(self.backbone)
        else:
            state = dict(self.adapter_parameters())
        return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}

    def save(self, out_dir: Path, *, metadata: dict[str, Any]) -> list[Path]:
        """Write the artifact into ``out_dir``; return the written files."""
        from safetensors.torch import save_file

        if self._merged:
            raise InvalidInput("unmerge() before save()", field="adapter")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        meta = self._meta(dict(metadata))
        config: dict[str, Any]
        if self.peft_kind is not None:
            backbone: Any = self.backbone
            pcfg = backbone.peft_config["default"]
            config = pcfg.to_dict()
            config = json.loads(json.dumps(config, default=lambda o: sorted(o) if isinstance(o, set) else str(o)))
            config["inference_mode"] = True
            config["base_model_name_or_path"] = self.base_info.get("name")
        else:
            config = {"peft_type": None}
        config["auto_mapping"] = {
            "base_model_class": type(self.base).__name__,
            "parent_library": type(self.base).__module__,
            META_NAMESPACE: meta,
        }
        files = [out_dir / "adapter_config.json", out_dir / "adapter_model.safetensors"]
        files[0].write_text(json.dumps(config, indent=2, sort_keys=True))
        save_file(self._adapter_state(), str(files[1]), metadata={"format": "pt"})
        if self.head is not None:
            head_path = out_dir / "head.safetensors"
            save_file(
                {k: v.detach().cpu().contiguous().clone() for k, v in self.head.linear.state_dict().items()},
                str(head_path),
                metadata={"format": "pt"},
            )
            files.append(head_path)
        return files

    @torch.no_grad()
    def load_adapter_weights(self, adapter_dir: Path, *, meta: dict[str, Any] | None = None) -> None:
        """Copy an artifact's adapter and head weights into this model (same method, config,
        task and labels). Plain safetensors reads into the existing modules: this is the fast
        path for switching tasks on a loaded base."""
        adapter_dir = Path(adapter_dir)
        _check_adapter_dir(adapter_dir)
        meta = meta if meta is not None else read_adapter_meta(adapter_dir)
        recorded = dict(meta)
        if recorded.get("method") == self.method and recorded.get("method_config") != self.method_config:
            # normalised (only on a mismatch: this is the task-switch path): an artifact written
            # before an option existed records no value for it
            recorded["method_config"] = validate_method_config(self.method, recorded.get("method_config") or {})
        for key, mine in (("method", self.method), ("method_config", self.method_config),
                          ("task_type", self.task_type), ("labels", self.labels)):
            if recorded.get(key) != mine:
                raise InvalidInput(f"artifact {key} {meta.get(key)!r} differs from the model's {mine!r}",
                                   field="adapter")
        if self._merged:
            raise InvalidInput("unmerge() before loading other weights", field="adapter")
        # Read and check everything before copying anything: a refused artifact leaves the
        # model serving its previous adapter, not half of each.
        state = _read_safetensors(adapter_dir / "adapter_model.safetensors")
        head_state = _read_safetensors(adapter_dir / "head.safetensors") if self.head is not None else {}
        head_params = dict(self.head.linear.named_parameters()) if self.head is not None else {}
        _check_exact(head_params, head_state)
        if self.peft_kind == "tuner" and self._peft_keys() is None:
            # a PEFT type whose saved keys are not plain parameter names
            from peft import get_peft_model_state_dict, set_peft_model_state_dict

            expected = set(get_peft_model_state_dict(self.backbone))
            if set(state) != expected:
                raise InvalidInput(
                    f"adapter weights do not match the method: {sorted(set(state) ^ expected)[:5]}",
                    field="adapter",
                )
            set_peft_model_state_dict(self.backbone, state)
        else:
            params = self._peft_keys() if self.peft_kind == "tuner" else self.adapter_parameters()
            assert params is not None
            _check_exact(params, state)
            _copy(params, state)
        _copy(head_params, head_state)


# Below this size one read() and an in-memory parse beat safetensors' memory map, whose per-tensor
# setup (about 25 us a tensor here) dominates a small file; above it the copy of the whole file costs
# more (measured crossover 5-8 MB on our CPU).
_READ_WHOLE_BELOW = 4 * 2**20


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of one safetensors file, on the CPU (``copy_`` moves them to the model's device).

    A 0.9 MB Houlsby artifact loads in 0.5 instead of 1.4 ms this way (48 tensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load, load_file

    if not path.is_file():
        raise InvalidInput(f"adapter directory has no {path.name}", field="adapter")
    try:
        if path.stat().st_size < _READ_WHOLE_BELOW:
            return load(path.read_bytes())
        return load_file(str(path))
    except SafetensorError as exc:
        raise InvalidInput(f"{path.name} is not a valid safetensors file: {exc}", field="adapter") from exc


def _check_exact(params: dict[str, nn.Parameter], state: dict[str, torch.Tensor]) -> None:
    if set(params) != set(state):
        diff = sorted(set(params) ^ set(state))[:5]
        raise InvalidInput(f"artifact weights do not match the model (e.g. {diff})", field="adapter")
    for name, p in params.items():
        t = state[name]
        if t.shape != p.shape:
            raise InvalidInput(f"shape of {name} is {tuple(t.shape)}, expected {tuple(p.shape)}", field="adapter")


def _copy(params: dict[str, nn.Parameter], state: dict[str, torch.Tensor]) -> None:
    for name, p in params.items():
        p.copy_(state[name])


def _is_causal_capable(config: Any) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and config.model_type not in ENCODER_ONLY_TYPES


def build_adapted_model(
    base_dir: Path,
    *,
    task_type: str,
    labels: list[str],
    method: str,
    method_config: dict[str, Any],
    base_sha256: str,
    base_name: str | None = None,
    device: str | torch.device = "cpu",
) -> AdaptedModel:
    """Load the base from ``base_dir`` (a HF directory with safetensors weights), freeze it and
    attach a fresh adapter of ``method`` and a fresh task head."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    base_dir = Path(base_dir)
    labels = _validate_task(task_type, labels)
    cfg = validate_method_config(method, method_config)
    _check_base_dir(base_dir)
    hf_config = AutoConfig.from_pretrained(base_dir)
    model_type = hf_config.model_type
    causal = task_type == "causal_lm"
    if causal and not _is_causal_capable(hf_config):
        raise InvalidInput(f"causal_lm needs a decoder model; {model_type!r} is not one", field="task_type")
    auto_cls = AutoModelForCausalLM if causal else AutoModel
    base, info = auto_cls.from_pretrained(  # type: ignore[misc]
        base_dir, use_safetensors=True, dtype=torch.float32, output_loading_info=True
    )
    missing = [k for k in info.get("missing_keys", ()) if "pooler" not in k]
    if missing:
        raise InvalidInput(
            f"base model weights are incomplete for {auto_cls.__name__} (missing {sorted(missing)[:3]})",
            field="base_model",
        )
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.sep_token
    for p in base.parameters():
        p.requires_grad_(False)

    ours: list[nn.Parameter] = []
    backbone: nn.Module = base
    peft_kind: str | None = None
    if method in BOTTLENECK_METHODS:
        from registry.methods.bottleneck import inject_bottleneck

        ours = inject_bottleneck(base, method, cfg)
    if method == "mam":
        from registry.methods.bottleneck import inject_bottleneck

        ours = inject_bottleneck(base, "scaled_parallel", {**cfg, "skip_layers": 0, "train_layer_norms": False})
    if method in ("lora", "ia3", "prefix_tuning", "peft", "mam"):
        from peft import get_peft_model

        from registry.methods.peft_methods import is_prompt_learning, make_peft_config

        peft_config = make_peft_config(method, cfg, model_type=model_type, causal=causal)
        try:
            backbone = get_peft_model(base, peft_config)
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidInput(f"{method} cannot be applied to {model_type!r}: {exc}", field="method_config") from exc
        peft_kind = "prompt" if is_prompt_learning(method, cfg) else "tuner"
    hidden = int(hf_config.hidden_size)
    head: TaskHead | None = None
    if task_type in CLASSIFICATION_TASKS:
        head = TaskHead(hidden, len(labels))
    elif task_type == "regression":
        head = TaskHead(hidden, 1)
    if method == "houlsby" and (cfg["ffn_lora_rank"] or cfg["ffn_lora_out_rank"]):
        # Houlsby + LoRA on the FFN: PEFT wraps the base that already holds our adapters. Attached
        # after the head is drawn, so a seed gives the same weights as the benchmark screen that
        # measured this configuration (bench/methods.py, houlsby11_lora_ffn16). The artifact stores
        # every trainable tensor under its module path, as for ``mam``.
        from peft import get_peft_model

        from registry.methods.bottleneck import ffn_lora_targets
        from registry.methods.peft_methods import ffn_lora_config

        ins, outs = ffn_lora_targets(base, cfg)
        try:
            backbone = get_peft_model(base, ffn_lora_config(cfg, ins, outs, causal=causal))
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidInput(f"ffn_lora cannot be applied to {model_type!r}: {exc}",
                               field="method_config.ffn_lora_rank") from exc
    # One pass decides what trains: what PEFT marked trainable, plus our modules.
    trainable_ids = {id(p) for p in backbone.parameters() if p.requires_grad} | {id(p) for p in ours}
    for p in backbone.parameters():
        p.requires_grad_(id(p) in trainable_ids)
    base_info = {"name": base_name, "sha256": base_sha256, "model_type": model_type, "hidden_size": hidden}
    model = AdaptedModel(
        base=base, backbone=backbone, head=head, tokenizer=tokenizer, task_type=task_type, labels=labels,
        method=method, method_config=cfg, base_info=base_info, peft_kind=peft_kind,
    )
    return model.to(device)


def load_adapted_model(
    base_dir: Path,
    adapter_dir: Path,
    *,
    base_sha256: str | None = None,
    device: str = "cpu",
) -> AdaptedModel:
    """Rebuild the model recorded in ``adapter_dir`` on the base in ``base_dir`` and load its
    weights. Raises ``BaseModelMismatch`` when ``base_sha256`` differs from the recorded one."""
    adapter_dir = Path(adapter_dir)
    _check_adapter_dir(adapter_dir)
    meta = read_adapter_meta(adapter_dir)
    recorded = (meta.get("base_model") or {}).get("sha256")
    if base_sha256 is not None and recorded != base_sha256:
        raise BaseModelMismatch(
            f"adapter was trained on base sha256 {recorded}, not {base_sha256}", field="base_sha256"
        )
    model = build_adapted_model(
        base_dir,
        task_type=meta["task_type"],
        labels=meta["labels"],
        method=meta["method"],
        method_config=meta["method_config"],
        base_sha256=str(recorded),
        base_name=(meta.get("base_model") or {}).get("name"),
        device=device,
    )
    model.load_adapter_weights(adapter_dir, meta=meta)
    model.eval()
    return model
