"""Method configurations: one frozen dataclass per adapter method (no torch import here).

The API validates ``method_config`` with these classes before a job is queued, so everything
in this module is pure Python. Each field carries ``metadata`` with a ``help`` text and, where
it applies, ``min``/``max``/``choices``; :func:`validate_config` reads those, refuses unknown
keys and wrong types, and returns the normalised config (defaults filled in) as a plain dict.

Methods and papers:

* ``houlsby``: Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP".
* ``pfeiffer``: Pfeiffer et al. 2021, "AdapterFusion: Non-Destructive Task Composition".
* ``parallel``/``scaled_parallel``: He et al. 2022, "Towards a Unified View of
  Parameter-Efficient Transfer Learning".
* ``lora``: Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models" (via PEFT).
* ``ia3``: Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper
  than In-Context Learning" (via PEFT).
* ``prefix_tuning``: Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts" (via PEFT).
* ``mam``: He et al. 2022 (Mix-And-Match: prefix tuning + scaled parallel adapter on the FFN).
* ``peft``: any PEFT config given as PEFT's own config dict (``{"peft_type": "LOHA", ...}``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from registry.errors import InvalidInput

NON_LINEARITIES = ("relu", "gelu", "swish", "tanh")
BIAS_CHOICES = ("none", "all", "query_ffn")
_MODULE_NAME_RE = re.compile(r"^[A-Za-z0-9_.]{1,128}$")


def _f(default: Any, help: str, **meta: Any) -> Any:
    return field(default=default, metadata={"help": help, **meta})


# --------------------------------------------------------------------------- bottleneck family


@dataclass(frozen=True)
class BottleneckConfig:
    """Options every bottleneck adapter shares (the family in registry/methods/bottleneck.py)."""

    reduction_factor: int | None = _f(
        None, "hidden size / bottleneck size (default 16 when bottleneck_size is not given)", min=1, max=4096
    )
    bottleneck_size: int | None = _f(None, "bottleneck width; give this or reduction_factor", min=1, max=65536)
    non_linearity: str = _f("relu", "activation inside the bottleneck", choices=NON_LINEARITIES)
    skip_layers: int = _f(0, "leave the lowest k layers without adapters (AdapterDrop)", min=0, max=1024)
    train_layer_norms: bool = _f(False, "also train the LayerNorms of adapted layers")
    # BitFit (Ben Zaken et al. 2022, "BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based
    # Masked Language-models"): the frozen base's own bias terms train. "query_ffn" is the paper's subset, the
    # query and FFN-input biases, which it found to move most and to keep most of full BitFit's accuracy.
    train_biases: str = _f(
        "none", "also train the base's bias terms in adapted layers (BitFit): none, all (every bias of the "
        "block), or query_ffn (the query and FFN-input projections' biases)", choices=BIAS_CHOICES,
    )
    base_dropout: bool = _f(
        True,
        "keep the frozen base model's dropout while training; false runs the frozen base "
        "deterministically (no dropout masks; attention can take the fused kernel)",
    )
    base_attention_dropout: bool = _f(
        True,
        "keep the frozen base's dropout on attention probabilities; false drops only that one (the hidden "
        "states keep theirs), so attention can take the fused kernel",
    )
    # The base's hidden-state dropout is what regularised the adapters most (docs/benchmarks.md, "Ten seeds
    # on the H200": SST-2 lost 0.85 without it); its rate is a free lever, as a rate costs the same mask
    base_hidden_dropout: float | None = _f(
        None, "dropout rate on the frozen base's hidden states (embeddings and every block's attention and FFN "
        "outputs) while training; null keeps the base's own rate (0.1 for BERT)", min=0.0, max=0.9,
    )


@dataclass(frozen=True)
class HoulsbyConfig(BottleneckConfig):
    """Houlsby et al. 2019: a bottleneck adapter after the attention output projection and one
    after the FFN output projection of every layer, before the residual + LayerNorm.
    The up-projection starts at zero, so a fresh adapter is exactly the identity."""

    non_linearity: str = _f("swish", "activation inside the bottleneck", choices=NON_LINEARITIES)
    # Full fine-tuning's lead over Houlsby on SST-2 sits in its FFN weights, and its change there is of
    # rank about 16 on the FFN input and 4 on its output (docs/benchmarks.md, "Full-rank FFN updates"):
    # a LoRA there (Hu et al. 2021, built with PEFT) gives the adapters that change.
    ffn_lora_rank: int = _f(
        0, "rank of a LoRA (Hu et al. 2021, via PEFT; alpha = 2 x rank) on the FFN input projection of "
        "every adapted layer; 0: none", min=0, max=4096,
    )
    ffn_lora_out_rank: int = _f(
        0, "rank of a LoRA (alpha = 2 x rank) on the FFN output projection of every adapted layer, "
        "under its adapter; 0: none", min=0, max=4096,
    )
    # PEFT's lora_dropout on those LoRAs' inputs: the base's dropout was what carried SST-2's phrases to
    # its sentences (docs/benchmarks.md, "Ten seeds on the H200"); this regularises the LoRAs the same way
    ffn_lora_dropout: float = _f(
        0.0, "dropout on the FFN LoRAs' inputs while training (PEFT's lora_dropout)", min=0.0, max=0.9,
    )
    # DoRA (Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation"): LoRA on the direction of
    # each weight column plus a trained magnitude per output unit. The paper shows its updates move
    # magnitude and direction the way full fine-tuning's do, which plain LoRA's do not; the adapters'
    # remaining SST-2 gap is one of carrying phrase-level learning over as full fine-tuning does.
    ffn_lora_dora: bool = _f(
        False, "decompose the FFN LoRAs' weights into magnitude and direction (DoRA, via PEFT's use_dora; "
        "adds one trained magnitude per output unit of each LoRA'd projection)",
    )


@dataclass(frozen=True)
class PfeifferConfig(BottleneckConfig):
    """Pfeiffer et al. 2021: a single bottleneck adapter after the FFN output of every layer."""


@dataclass(frozen=True)
class ParallelConfig(BottleneckConfig):
    """He et al. 2022: a bottleneck adapter parallel to the FFN: ``FFN(x) + s * A(x)``."""

    scaling: float = _f(1.0, "scale s of the adapter output", min=1e-6, max=1e4)


@dataclass(frozen=True)
class ScaledParallelConfig(ParallelConfig):
    """He et al. 2022: the parallel adapter with a fixed scale s (4 in the paper)."""

    scaling: float = _f(4.0, "scale s of the adapter output", min=1e-6, max=1e4)


# --------------------------------------------------------------------------- PEFT-backed


@dataclass(frozen=True)
class LoraConfig:
    """Hu et al. 2021 (LoRA), built with ``peft.LoraConfig``; field names are PEFT's."""

    r: int = _f(8, "rank of the update", min=1, max=4096)
    lora_alpha: float = _f(16.0, "scaling numerator (scaling = lora_alpha / r)", min=1e-6, max=1e6)
    lora_dropout: float = _f(0.0, "dropout on the LoRA input", min=0.0, max=0.9)
    target_modules: list[str] | None = _f(None, "module names to adapt (default: PEFT's per-architecture)")
    bias: str = _f("none", "which biases to train", choices=("none", "all", "lora_only"))


@dataclass(frozen=True)
class IA3Config:
    """Liu et al. 2022 ((IA)^3), built with ``peft.IA3Config``; field names are PEFT's."""

    target_modules: list[str] | None = _f(None, "module names to rescale (default: PEFT's per-architecture)")
    feedforward_modules: list[str] | None = _f(
        None, "subset of target_modules that are feed-forward (input is rescaled)"
    )


@dataclass(frozen=True)
class PrefixTuningConfig:
    """Li & Liang 2021 (prefix tuning), built with ``peft.PrefixTuningConfig``."""

    num_virtual_tokens: int = _f(20, "prefix length", min=1, max=512)
    prefix_projection: bool = _f(False, "reparametrise the prefix with a two-layer MLP")
    encoder_hidden_size: int | None = _f(None, "hidden size of that MLP (default: model hidden size)", min=1)


@dataclass(frozen=True)
class MamConfig:
    """He et al. 2022, Mix-And-Match adapter: prefix tuning on attention (PEFT) plus a scaled
    parallel bottleneck adapter on the FFN (ours)."""

    num_virtual_tokens: int = _f(30, "prefix length (30 in the paper)", min=1, max=512)
    prefix_projection: bool = _f(False, "reparametrise the prefix with a two-layer MLP")
    reduction_factor: int | None = _f(
        None, "hidden size / bottleneck size (default 16 when bottleneck_size is not given)", min=1, max=4096
    )
    bottleneck_size: int | None = _f(None, "bottleneck width; give this or reduction_factor", min=1, max=65536)
    non_linearity: str = _f("relu", "activation inside the bottleneck", choices=NON_LINEARITIES)
    scaling: float = _f(4.0, "scale s of the parallel adapter output", min=1e-6, max=1e4)


# PEFT types accepted by the generic ``peft`` method (those that need no special training loop).
PEFT_TYPES = (
    "LORA",
    "LOHA",
    "LOKR",
    "IA3",
    "OFT",
    "BOFT",
    "VERA",
    "FOURIERFT",
    "HRA",
    "LN_TUNING",
    "PREFIX_TUNING",
    "PROMPT_TUNING",
    "P_TUNING",
)
PROMPT_LEARNING_PEFT_TYPES = ("PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING")
# Keys that we set ourselves (or that would make PEFT do something outside the contract).
_PEFT_RESERVED = (
    "task_type",
    "base_model_name_or_path",
    "revision",
    "inference_mode",
    "modules_to_save",
    "auto_mapping",
    "peft_version",
    "init_lora_weights_path",
)

CONFIG_CLASSES: dict[str, type] = {
    "houlsby": HoulsbyConfig,
    "pfeiffer": PfeifferConfig,
    "parallel": ParallelConfig,
    "scaled_parallel": ScaledParallelConfig,
    "lora": LoraConfig,
    "ia3": IA3Config,
    "prefix_tuning": PrefixTuningConfig,
    "mam": MamConfig,
}
BOTTLENECK_METHODS = ("houlsby", "pfeiffer", "parallel", "scaled_parallel")
PEFT_METHODS = ("lora", "ia3", "prefix_tuning", "peft")


# --------------------------------------------------------------------------- validation


def _err(key: str, msg: str) -> InvalidInput:
    return InvalidInput(f"method_config.{key}: {msg}", field=f"method_config.{key}")


def _check_value(key: str, value: Any, tp: Any, meta: dict[str, Any]) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None:
            return None
        (tp,) = [a for a in args if a is not type(None)]
        origin = typing.get_origin(tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise _err(key, f"must be a boolean, got {type(value).__name__}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _err(key, f"must be an integer, got {type(value).__name__}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _err(key, f"must be a number, got {type(value).__name__}")
        value = float(value)
        if not math.isfinite(value):
            raise _err(key, "must be finite")
    elif tp is str:
        if not isinstance(value, str):
            raise _err(key, f"must be a string, got {type(value).__name__}")
    elif origin is list:
        if not isinstance(value, list) or not value:
            raise _err(key, "must be a non-empty list of module names")
        for item in value:
            if not isinstance(item, str) or not _MODULE_NAME_RE.fullmatch(item):
                raise _err(key, f"invalid module name {item!r}")
        value = list(dict.fromkeys(value))
    else:  # pragma: no cover - a field type this validator does not know
        raise TypeError(f"unsupported field type {tp!r}")
    if "choices" in meta and value not in meta["choices"]:
        raise _err(key, f"must be one of {', '.join(map(str, meta['choices']))}")
    if "min" in meta and value < meta["min"]:
        raise _err(key, f"must be >= {meta['min']}")
    if "max" in meta and value > meta["max"]:
        raise _err(key, f"must be <= {meta['max']}")
    return value


def validate_config(method: str, config: dict[str, Any]) -> dict[str, Any]:
    """Validate ``config`` for ``method``; return the normalised dict (all fields, defaults filled)."""
    if method == "peft":
        return _validate_peft_passthrough(config)
    cls = CONFIG_CLASSES[method]
    if not isinstance(config, dict):
        raise InvalidInput("method_config must be an object", field="method_config")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in config:
        if key not in fields:
            raise _err(str(key), f"unknown option for method {method!r}; known: {', '.join(fields)}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name in config:
            values[name] = _check_value(name, config[name], hints[name], dict(f.metadata))
    if "bottleneck_size" in fields:
        if values.get("bottleneck_size") is not None and values.get("reduction_factor") is not None:
            raise _err("bottleneck_size", "give reduction_factor or bottleneck_size, not both")
        if values.get("bottleneck_size") is None and values.get("reduction_factor") is None:
            values["reduction_factor"] = 16
    if values.get("base_hidden_dropout") is not None and values.get("base_dropout") is False:
        raise _err("base_hidden_dropout", "needs base_dropout true (base_dropout false turns every dropout off)")
    has_ffn_lora = values.get("ffn_lora_rank") or values.get("ffn_lora_out_rank")
    if values.get("ffn_lora_dropout") and not has_ffn_lora:
        raise _err("ffn_lora_dropout", "needs ffn_lora_rank or ffn_lora_out_rank (there is no FFN LoRA to drop out)")
    if values.get("ffn_lora_dora") and not has_ffn_lora:
        raise _err("ffn_lora_dora", "needs ffn_lora_rank or ffn_lora_out_rank (there is no FFN LoRA to decompose)")
    if method == "ia3" and values.get("feedforward_modules") is not None:
        targets = values.get("target_modules")
        if targets is None:
            raise _err("feedforward_modules", "needs target_modules too")
        missing = [m for m in values["feedforward_modules"] if m not in targets]
        if missing:
            raise _err("feedforward_modules", f"must be a subset of target_modules (not: {missing})")
    return dataclasses.asdict(cls(**values))


def _check_json(key: str, value: Any, depth: int = 0) -> None:
    if depth > 4:
        raise _err(key, "nested too deeply")
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _err(key, "must be finite")
        return
    if isinstance(value, list):
        if len(value) > 1000:
            raise _err(key, "list too long")
        for v in value:
            _check_json(key, v, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise _err(key, "object keys must be strings")
            _check_json(key, v, depth + 1)
        return
    raise _err(key, f"unsupported value type {type(value).__name__}")


def _validate_peft_passthrough(config: dict[str, Any]) -> dict[str, Any]:
    """Structural checks only (PEFT itself needs torch); the full check runs when the model is built."""
    if not isinstance(config, dict):
        raise InvalidInput("method_config must be an object", field="method_config")
    peft_type = config.get("peft_type")
    if not isinstance(peft_type, str):
        raise _err("peft_type", "required: a PEFT type name such as 'LORA' or 'LOHA'")
    peft_type = peft_type.upper()
    if peft_type not in PEFT_TYPES:
        raise _err("peft_type", f"unsupported PEFT type {peft_type!r}; supported: {', '.join(PEFT_TYPES)}")
    out: dict[str, Any] = {"peft_type": peft_type}
    for key in sorted(config):
        if key == "peft_type":
            continue
        if not isinstance(key, str) or not re.fullmatch(r"[a-z_][a-z0-9_]{0,63}", key):
            raise _err(str(key), "not a valid option name")
        if key in _PEFT_RESERVED:
            raise _err(key, "is set by the registry and cannot be given")
        _check_json(key, config[key])
        out[key] = config[key]
    return out
