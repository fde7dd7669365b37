"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") on a frozen
``nn.Linear``, with the LoRA's product added into the base layer's output in place. It is used for the
FFN LoRAs of Houlsby's hybrid (``ffn_lora_rank``, ``ffn_lora_out_rank``).

Why: PEFT's ``lora.Linear`` computes ``base(x) + lora_B(lora_A(dropout(x))) * scaling``. On an FFN
input projection (16 x 128 tokens x 1536 units) that makes three full-width temporaries: B's output,
its scaled copy and the sum. Backward scales the full-width gradient once more. Here the scaling is
folded into B, a rank-r matrix, and the product is a GEMM with beta = 1 into the base layer's output:
``base(x).addmm_(x A^T, (s B)^T)``. That is one full-width pass instead of three forward and one
backward (docs/benchmarks.md, "A fused FFN LoRA").

The results are PEFT's, bit for bit on CPU (tests/unit/test_fused_lora.py checks outputs, every
gradient and the weights after optimiser steps):
* the hybrid's scaling is 2 (alpha = 2r), and multiplying by a power of two rounds nothing;
* a GEMM with beta = 1 rounds its product once and then adds it, as the separate add does;
* backward is autograd's, so the input's gradient is summed over the same terms in the same order.
  (Fusing backward's sum of the base's and the LoRA's input gradients into a GEMM as well saves about
  as much again, but it reorders that sum with the residual branch's term: a rounding-level
  difference that would make every trained seed differ from those measured with PEFT's layer.)

It falls back to PEFT's own forward wherever it would differ: dropout on the LoRA's input, DoRA or
another variant, a bias on B, several active adapters, a merged or disabled adapter, a trainable base
layer, autocast, or mismatched dtypes; and when ``fuse`` is set to False (the benchmark's control).
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from peft.tuners.lora.layer import Linear as PeftLoraLinear
from torch import nn


class FusedLoraLinear(PeftLoraLinear):
    """PEFT's ``lora.Linear`` with the fused forward above; the same parameters, state dict and merging."""

    fuse: bool = True

    def _fusable(self, x: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        if not self.fuse or args or kwargs or self.disable_adapters or self.merged or len(self.active_adapters) != 1:
            return None
        name = self.active_adapters[0]
        base = self.get_base_layer()
        if (
            name not in self.lora_A
            or name in self.lora_variant
            or not isinstance(self.lora_dropout[name], nn.Identity)
            or self.lora_B[name].bias is not None
            or type(base) is not nn.Linear
            or any(p.requires_grad for p in base.parameters())
            or torch.is_autocast_enabled(x.device.type)
            or not (x.dtype == base.weight.dtype == self.lora_A[name].weight.dtype)
        ):
            return None
        return str(name)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        name = self._fusable(x, args, kwargs)
        if name is None:
            return super().forward(x, *args, **kwargs)
        base = cast(nn.Linear, self.get_base_layer())  # _fusable checked its type
        lora_a, lora_b = cast(nn.Linear, self.lora_A[name]), cast(nn.Linear, self.lora_B[name])
        out = F.linear(x, base.weight, base.bias)  # (..., out)
        xa = F.linear(x, lora_a.weight)  # (..., r)
        scaled_b = lora_b.weight * self.scaling[name]  # (out, r): small, unlike a scaled output
        # in place on the base's output: autograd saved nothing of it (its weight is frozen)
        out.view(-1, out.shape[-1]).addmm_(xa.view(-1, xa.shape[-1]), scaled_b.t())
        return out
