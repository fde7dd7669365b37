"""FastDropout: stock inverted dropout's distribution with a cheaper mask on CPU."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from registry.methods.dropout import FastDropout, fast_dropout, keep_mask, use_fast_dropout  # noqa: E402


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_keep_rate_and_scale_match_stock_dropout(p: float) -> None:
    """Each element is kept with probability 1 - p (within 5 binomial standard deviations over 2**21
    draws) and scaled by 1 / (1 - p), so the expectation is the input, as for F.dropout."""
    torch.manual_seed(0)
    n = 1 << 21
    x = torch.ones(n)
    y = fast_dropout(x, p)
    kept = int((y != 0).sum())
    sd = math.sqrt(n * p * (1 - p))
    assert abs(kept - n * (1 - p)) < 5 * sd
    assert torch.allclose(y[y != 0], torch.full((kept,), 1 / (1 - p)))
    assert abs(float(y.mean()) - 1.0) < 5 * sd / n / (1 - p)


@pytest.mark.parametrize("p", [0.3, 0.5, 0.7])
def test_lanes_are_independent_and_uniform(p: float) -> None:
    """Neighbouring elements (lanes of one random word, and the last lane of a word with the first of
    the next) are uncorrelated, and each of the four lanes of a word keeps at 1 - p: no lane is biased
    (the top lane of a word would be, had the words been drawn from [0, 2**63)), at thresholds that
    test the lanes' low bits as well as their sign."""
    torch.manual_seed(1)
    rows = 1 << 20
    keep = keep_mask((rows, 4), p).float()  # one word per row
    rates = keep.mean(0)
    assert torch.all((rates - (1 - p)).abs() < 5 * math.sqrt(p * (1 - p) / rows))
    flat = keep.flatten()
    for a, b in ((keep[:, :-1].flatten(), keep[:, 1:].flatten()), (flat[3:-1:4], flat[4::4])):
        corr = float(((a - a.mean()) * (b - b.mean())).mean() / (a.std() * b.std()))
        assert abs(corr) < 5 / math.sqrt(a.numel())
    # and the mask is not the same from one call to the next
    assert not torch.equal(keep_mask((4096,), 0.5), keep_mask((4096,), 0.5))


def test_gradient_is_the_same_mask_scaled() -> None:
    torch.manual_seed(2)
    x = torch.randn(8, 5, 12, requires_grad=True)
    y = fast_dropout(x, 0.3)
    g = torch.randn_like(y)
    y.backward(g)
    kept = y.detach() != 0
    assert x.grad is not None
    assert torch.allclose(x.grad, torch.where(kept, g / 0.7, 0.0))
    assert torch.allclose(y.detach(), torch.where(kept, x.detach() / 0.7, 0.0))

    def same_mask(t: torch.Tensor) -> torch.Tensor:  # gradcheck calls it many times: one mask throughout
        torch.manual_seed(3)
        return fast_dropout(t, 0.3)

    assert torch.autograd.gradcheck(same_mask, (torch.randn(3, 4, dtype=torch.float64, requires_grad=True),))


def test_seeded_eval_and_odd_sizes() -> None:
    """torch.manual_seed repeats the mask; eval mode and p=0 are the identity; a size that is not a
    multiple of four lanes works; the module is an nn.Dropout for code that finds dropouts by type."""
    x = torch.randn(3, 7, 5)  # 105 elements: 27 words, one lane left over
    torch.manual_seed(4)
    a = fast_dropout(x, 0.4)
    torch.manual_seed(4)
    assert torch.equal(a, fast_dropout(x, 0.4))
    assert fast_dropout(x, 0.4, training=False) is x
    assert fast_dropout(x, 0.0) is x
    drop = FastDropout(0.4)
    assert isinstance(drop, torch.nn.Dropout)
    drop.eval()
    assert drop(x) is x


def test_use_fast_dropout_swaps_lora_dropouts_only() -> None:
    """Only nn.Dropout in a LoRA layer's ``lora_dropout`` dict is swapped (same p, same mode); the
    base's own dropouts and identities are left alone."""
    lora_like = torch.nn.Module()
    lora_like.lora_dropout = torch.nn.ModuleDict({"default": torch.nn.Dropout(0.3), "other": torch.nn.Identity()})
    model = torch.nn.Sequential(lora_like, torch.nn.Dropout(0.1))
    model.eval()
    assert use_fast_dropout(model) == 1
    swapped = lora_like.lora_dropout["default"]
    assert type(swapped) is FastDropout and swapped.p == 0.3 and not swapped.training
    assert type(lora_like.lora_dropout["other"]) is torch.nn.Identity
    assert type(model[1]) is torch.nn.Dropout
    assert use_fast_dropout(model) == 0  # idempotent
