"""PEFT-backed methods: ``lora``, ``ia3``, ``prefix_tuning`` and the generic ``peft`` method.

We do not re-implement these; we build PEFT's own config and call ``peft.get_peft_model``.

* LoRA: Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models".
* (IA)^3: Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper
  than In-Context Learning".
* Prefix tuning: Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation".
* ``peft``: any PEFT config given as PEFT's own dict, e.g. ``{"peft_type": "LOHA", "r": 8}``.

Encoder tasks use PEFT's ``FEATURE_EXTRACTION`` task type (the base is an ``AutoModel``; our
head sits on top); ``causal_lm`` uses ``CAUSAL_LM`` on an ``AutoModelForCausalLM``.
"""

from __future__ import annotations

from typing import Any

from registry.errors import InvalidInput
from registry.methods.configs import PROMPT_LEARNING_PEFT_TYPES

# PEFT 0.21 has no default target modules for these architectures.
_DEFAULT_LORA_TARGETS: dict[str, list[str]] = {"distilbert": ["q_lin", "v_lin"]}
_DEFAULT_IA3_TARGETS: dict[str, tuple[list[str], list[str]]] = {
    "distilbert": (["k_lin", "v_lin", "lin2"], ["lin2"]),
}
# Architectures whose attention accepts ``past_key_values`` (needed by prefix tuning).
_NO_PREFIX_SUPPORT = ("distilbert",)


def peft_type_of(method: str, cfg: dict[str, Any]) -> str:
    if method == "lora":
        return "LORA"
    if method == "ia3":
        return "IA3"
    if method in ("prefix_tuning", "mam"):
        return "PREFIX_TUNING"
    if method == "peft":
        return str(cfg["peft_type"])
    raise ValueError(method)


def is_prompt_learning(method: str, cfg: dict[str, Any]) -> bool:
    return peft_type_of(method, cfg) in PROMPT_LEARNING_PEFT_TYPES


def make_peft_config(method: str, cfg: dict[str, Any], *, model_type: str, causal: bool) -> Any:
    """Build the ``peft`` config object for ``method`` (``mam`` gives its prefix-tuning part)."""
    import peft
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    task_type = peft.TaskType.CAUSAL_LM if causal else peft.TaskType.FEATURE_EXTRACTION
    peft_type = peft_type_of(method, cfg)
    if peft_type in PROMPT_LEARNING_PEFT_TYPES and model_type in _NO_PREFIX_SUPPORT:
        raise InvalidInput(
            f"{method} ({peft_type.lower()}) is not supported for the architecture {model_type!r} "
            "(its attention takes no past key/values)",
            field="method",
        )
    kwargs: dict[str, Any]
    if method == "lora":
        kwargs = dict(cfg)
        if kwargs["target_modules"] is None and model_type in _DEFAULT_LORA_TARGETS:
            kwargs["target_modules"] = _DEFAULT_LORA_TARGETS[model_type]
    elif method == "ia3":
        kwargs = dict(cfg)
        if kwargs["target_modules"] is None and model_type in _DEFAULT_IA3_TARGETS:
            kwargs["target_modules"], kwargs["feedforward_modules"] = _DEFAULT_IA3_TARGETS[model_type]
    elif method == "prefix_tuning":
        kwargs = dict(cfg)
    elif method == "mam":
        kwargs = {"num_virtual_tokens": cfg["num_virtual_tokens"], "prefix_projection": cfg["prefix_projection"]}
    else:
        kwargs = {k: v for k, v in cfg.items() if k != "peft_type"}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    config_cls = PEFT_TYPE_TO_CONFIG_MAPPING[peft.PeftType(peft_type)]
    try:
        return config_cls(task_type=task_type, **kwargs)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"invalid {peft_type} config: {exc}", field="method_config") from exc


def ffn_lora_config(cfg: dict[str, Any], ins: list[str], outs: list[str], *, causal: bool) -> Any:
    """PEFT's LoRA for Houlsby's ``ffn_lora_rank``/``ffn_lora_out_rank``: rank r with alpha = 2r (the
    registry's LoRA default ratio) on the FFN input projections ``ins`` and output projections
    ``outs`` (full module names), each group at its own rank."""
    import re

    import peft

    in_rank, out_rank = int(cfg.get("ffn_lora_rank", 0)), int(cfg.get("ffn_lora_out_rank", 0))
    targets = (ins if in_rank else []) + (outs if out_rank else [])
    r = in_rank or out_rank
    # PEFT matches pattern keys as regexes against the end of a module name: exact, escaped names
    ranks = {re.escape(n): out_rank for n in outs} if in_rank and out_rank and out_rank != in_rank else {}
    return peft.LoraConfig(
        task_type=peft.TaskType.CAUSAL_LM if causal else peft.TaskType.FEATURE_EXTRACTION,
        r=r,
        lora_alpha=2 * r,
        lora_dropout=float(cfg.get("ffn_lora_dropout", 0.0)),
        use_dora=bool(cfg.get("ffn_lora_dora", False)),
        target_modules=targets,
        rank_pattern=ranks,
        alpha_pattern={k: 2 * v for k, v in ranks.items()},
    )
