"""FastDropout: stock inverted dropout's distribution with a cheaper mask on CPU."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

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


def test_in_a_hybrid_model_the_gradients_equal_plain_autograd_dropout_with_the_same_masks(
    tiny_models: dict[str, Path],
) -> None:
    """Houlsby + FFN LoRA with ``ffn_lora_dropout``, FastDropout swapped in, the base's own dropout off:
    the masks FastDropout draws, replayed through ``x * mask / (1 - p)`` with plain autograd, give the same
    loss and the same gradient for every trained tensor (so any accuracy difference between the two is
    the random stream's, not the implementation's)."""
    from registry.methods import dropout as fd
    from registry.methods.model import build_adapted_model

    torch.manual_seed(0)
    model = build_adapted_model(
        tiny_models["bert"], task_type="single_label", labels=["neg", "pos"], method="houlsby",
        method_config={"bottleneck_size": 4, "ffn_lora_rank": 4, "ffn_lora_out_rank": 2, "ffn_lora_dropout": 0.3,
                       "base_dropout": False},
        base_sha256="sha", base_name="tiny",
    )
    assert use_fast_dropout(model) > 0
    with torch.no_grad():  # B and the up-projections start at zero; make every path carry gradient
        for p in model.parameters():
            if p.requires_grad and p.dim() > 1:
                p.normal_(0, 0.05)
    model.train()
    enc = model.tokenize(["a fine film", "a dull and tedious film", "fine"])
    targets = torch.tensor([1, 0, 1])
    masks: list[torch.Tensor] = []
    draw = fd.keep_mask

    def recording(*args: Any, **kwargs: Any) -> torch.Tensor:
        masks.append(draw(*args, **kwargs))
        return masks[-1]

    def grads() -> tuple[float, dict[str, torch.Tensor]]:
        model.zero_grad()
        loss = model.compute_loss(model(**enc), targets)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    fd.keep_mask = recording  # type: ignore[assignment]
    try:
        loss_fast, fast = grads()
    finally:
        fd.keep_mask = draw  # type: ignore[assignment]
    replay = iter(masks)

    class Replay(torch.nn.Dropout):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * next(replay).to(x.dtype) / (1 - self.p)

    for module in model.modules():
        drops = getattr(module, "lora_dropout", None)
        if isinstance(drops, torch.nn.ModuleDict):
            for key, drop in list(drops.items()):
                if isinstance(drop, FastDropout):
                    drops[key] = Replay(drop.p)
    loss_plain, plain = grads()
    assert len(masks) == 4 and next(replay, None) is None  # 2 layers x 2 LoRAs, each mask used once
    assert loss_fast == pytest.approx(loss_plain, rel=1e-6)
    assert set(fast) == set(plain) and len(fast) > 10
    for name in fast:
        assert torch.allclose(fast[name], plain[name], rtol=1e-5, atol=1e-7), name


def test_masks_of_successive_calls_are_independent_at_every_position() -> None:
    """Over 200 masks of one activation shape (tokens x features), each position is kept a binomial
    number of times (its variance across positions is 200 p (1 - p)), and a mask is uncorrelated with
    the one before it: no position, feature or token is favoured from step to step."""
    torch.manual_seed(5)
    shape, calls, p = (8, 16, 96), 200, 0.3
    counts = torch.zeros(shape)
    before = None
    for _ in range(calls):
        keep = keep_mask(shape, p).float()
        counts += keep
        if before is not None:
            a, b = keep.flatten() - keep.mean(), before.flatten() - before.mean()
            assert abs(float((a * b).mean() / (a.std() * b.std()))) < 5 / math.sqrt(a.numel())
        before = keep
    expected = calls * p * (1 - p)
    n = counts.numel()
    # the sample variance of n binomial counts has sd about expected * sqrt(2 / n)
    assert abs(float(counts.var()) - expected) < 5 * expected * math.sqrt(2 / n)
    assert abs(float(counts.mean()) / calls - (1 - p)) < 5 * math.sqrt(p * (1 - p) / (n * calls))
