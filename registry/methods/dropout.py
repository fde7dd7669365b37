"""Inverted dropout (Srivastava et al. 2014, "Dropout: a simple way to prevent neural networks from
overfitting") with a cheaper mask on CPU, for the LoRA inputs the adapters drop out.

Why: on CPU, ``torch.nn.functional.dropout`` draws one Bernoulli sample per element through
``bernoulli_``, which costs several times a uniform draw. The FFN LoRA on BERT's output projection
drops out a (batch, tokens, 4 x hidden) tensor: on the 2-core benchmark CPU at 16 x 128 that took 31 ms
forward + backward with torch's dropout and takes 10 ms here, and the Houlsby + FFN LoRA hybrid with
``ffn_lora_dropout: 0.3`` went from 1.09x to 0.91x full fine-tuning's step time (docs/benchmarks.md, "A
cheaper dropout mask for the LoRAs"). Here each 64-bit random word gives four 16-bit lanes and an element
is kept when its lane is at or above ``p`` of the lane range, so the mask costs a quarter of a draw per
element, and backward multiplies by the saved boolean mask (a byte an element) instead of a float one.

It is opt-in (:func:`use_fast_dropout`), not the registry's default. The masks and gradients are exact
(tests/unit/test_dropout.py), yet nine of eleven SST-2 seeds trained with it scored below the same seeds
with torch's masks (mean -0.75). That is either the random stream's chance or an effect not yet understood;
until more seeds settle it, the registry keeps torch's dropout.

It is the same distribution as stock dropout with ``p`` rounded to a multiple of 2**-16 (0.3 becomes
0.300003): each element is kept independently with probability ``1 - p`` and scaled by ``1 / (1 - p)``,
from torch's default generator, so ``torch.manual_seed`` makes it repeatable. On CUDA (and any device
other than CPU) it is stock dropout, whose fused kernel is already cheap. In eval mode it is the
identity, like ``nn.Dropout``; it subclasses ``nn.Dropout`` so code that finds or zeroes dropouts by
type (``disable_dropout``, PEFT's checks) treats it as one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_LANES = 4  # 16-bit lanes per 64-bit random word
_LANE_MIN = torch.iinfo(torch.int16).min
_LANE_RANGE = 1 << 16


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """A boolean mask of ``shape`` whose elements are True independently with probability
    ``1 - round(p * 2**16) / 2**16``."""
    n = math.prod(shape)
    words = torch.empty((n + _LANES - 1) // _LANES, dtype=torch.int64, device=device)
    # from=int64 min with no upper bound draws from the full 64-bit range, so every lane is uniform
    words.random_(torch.iinfo(torch.int64).min, None)
    lanes = words.view(torch.int16)[:n].view(shape)
    return lanes >= _LANE_MIN + round(p * _LANE_RANGE)


class _MaskScale(torch.autograd.Function):
    """``x * keep * scale`` that saves the boolean mask (a byte an element) for backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None, None


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout of ``x`` with probability ``p``; see the module docstring."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not x.is_floating_point() or p >= 1.0:
        return F.dropout(x, p, training=True)
    return _MaskScale.apply(x, keep_mask(x.shape, p, x.device), 1.0 / (1.0 - p))


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with :func:`fast_dropout`'s mask on CPU (same ``p``, same state: none)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.inplace:  # never set by PEFT; keep nn.Dropout's own semantics for it
            return super().forward(input)
        return fast_dropout(input, self.p, self.training)


def replace_lora_dropout(model: nn.Module, make: Callable[[float], nn.Module]) -> int:
    """Replace every plain ``nn.Dropout`` (p > 0) in the LoRA layers' ``lora_dropout`` dicts of ``model``
    (PEFT's LoRA, and so our FFN LoRAs) by ``make(p)`` in the same train/eval mode; return how many.
    Only those: the base's own dropouts are the frozen model's, and full fine-tuning, the baseline,
    keeps them as they are."""
    replaced = 0
    for module in model.modules():
        drops = getattr(module, "lora_dropout", None)
        if not isinstance(drops, nn.ModuleDict):
            continue
        for name, drop in list(drops.items()):
            if type(drop) is nn.Dropout and drop.p > 0:
                new = make(drop.p)
                new.train(drop.training)
                drops[name] = new
                replaced += 1
    return replaced


def use_fast_dropout(model: nn.Module) -> int:
    """Put :class:`FastDropout` on every LoRA input of ``model`` (see :func:`replace_lora_dropout`)."""
    return replace_lora_dropout(model, FastDropout)
