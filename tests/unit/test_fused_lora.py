"""FusedLoraLinear: PEFT's LoRA on a frozen nn.Linear, its product added into the base output in place,
with PEFT's results bit for bit; and PEFT's own forward wherever fusing would change them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from torch import nn  # noqa: E402

from registry.methods.fused_lora import FusedLoraLinear  # noqa: E402
from tests.unit.test_methods import batch, build  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pair(n_in: int, n_out: int, r: int, **lora: Any) -> tuple[Any, Any]:
    """The same one-layer model under PEFT's lora.Linear and under FusedLoraLinear, equal weights,
    with B drawn non-zero so that the LoRA's product counts."""
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(n_in, n_out))
    kwargs = {"r": r, "lora_alpha": 2 * r, "target_modules": ["0"], **lora}
    stock = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(**kwargs))
    config = peft.LoraConfig(**kwargs)
    config._register_custom_module({nn.Linear: FusedLoraLinear})
    fused = peft.get_peft_model(copy.deepcopy(base), config)
    for name, p in stock.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(p, std=0.5)
    fused.load_state_dict(stock.state_dict())
    assert isinstance(fused.base_model.model[0], FusedLoraLinear)
    assert type(stock.base_model.model[0]) is peft.tuners.lora.layer.Linear
    return stock, fused


def _forward_backward(model: Any, x: Any, grad: Any) -> tuple[Any, Any, list[Any]]:
    x = x.clone().requires_grad_(True)
    y = model(x)
    y.backward(grad)
    return y.detach(), x.grad, [p.grad for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize(("n_in", "n_out", "r"), [(24, 96, 6), (96, 24, 2), (384, 1536, 20), (1536, 384, 5)])
def test_fused_lora_is_peft_bit_for_bit(n_in: int, n_out: int, r: int) -> None:
    """Outputs, the input's gradient and A's and B's gradients are equal to PEFT's, not just close:
    the scaling (2) folds into B without rounding, and the in-place GEMM adds its rounded product as
    PEFT's separate add does. Shapes: tiny, and all-MiniLM's FFN input and output projections."""
    stock, fused = _pair(n_in, n_out, r)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 17, n_in, generator=g)  # (B, T, in)
    grad = torch.randn(3, 17, n_out, generator=g)
    assert fused.base_model.model[0]._fusable(x, (), {}) == "default"  # the fused path, not PEFT's
    y0, dx0, dp0 = _forward_backward(stock, x, grad)
    y1, dx1, dp1 = _forward_backward(fused, x, grad)
    assert torch.count_nonzero(y0 - stock.base_model.model[0].base_layer(x)) > 0  # the LoRA changes the output
    assert torch.equal(y0, y1)
    assert torch.equal(dx0, dx1)
    assert len(dp0) == len(dp1) == 2
    assert all(torch.equal(a, b) for a, b in zip(dp0, dp1, strict=True))
    # a 2-D input and one without grad take the same path
    assert torch.equal(stock(x[0]), fused(x[0]))
    with torch.no_grad():
        assert torch.equal(stock(x), fused(x))


@pytest.mark.parametrize(
    "case", ["dropout", "dora", "lora_bias", "merged", "disabled", "trainable_base", "switched_off", "autocast"]
)
def test_fused_lora_falls_back_to_peft_where_fusing_would_differ(case: str) -> None:
    """Each case the fused forward does not cover runs PEFT's own forward, whose result it then is."""
    configs = {"dropout": {"lora_dropout": 0.5}, "dora": {"use_dora": True}, "lora_bias": {"lora_bias": True}}
    stock, fused = _pair(16, 32, 4, **configs.get(case, {}))
    layer = fused.base_model.model[0]
    x = torch.randn(2, 5, 16)
    assert layer._fusable(x, (), {}) == (None if case in configs else "default")
    if case == "merged":
        fused.merge_adapter()
    elif case == "disabled":
        layer.enable_adapters(False)
    elif case == "trainable_base":
        layer.base_layer.weight.requires_grad_(True)
    elif case == "switched_off":
        layer.fuse = False
    if case == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert layer._fusable(x, (), {}) is None
        return
    assert layer._fusable(x, (), {}) is None
    if case in ("merged", "disabled", "trainable_base", "switched_off"):
        reference = stock
        if case == "merged":
            stock.merge_adapter()
        elif case == "disabled":
            stock.base_model.model[0].enable_adapters(False)
        stock.eval(), fused.eval()
        assert torch.equal(reference(x), fused(x))


def test_houlsby_ffn_loras_are_fused_and_train_as_peft_does(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """The hybrid's FFN LoRAs are FusedLoraLinear, and three AdamW steps of the whole model (base dropout
    on, so the same random stream is drawn) give the same loss, gradients and weights as with PEFT's
    forward, bit for bit; a saved artifact loads into the same modules."""
    models = []
    for fuse in (False, True):
        model = build(tiny_models, "houlsby+ffn_lora", "bert", "single_label")
        layers = [m for m in model.modules() if isinstance(m, FusedLoraLinear)]
        assert len(layers) == 2 * 2  # FFN input and output projections of the tiny BERT's two layers
        for m in layers:
            m.fuse = fuse
            x = torch.zeros(1, 1, m.in_features)
            assert m._fusable(x, (), {}) == ("default" if fuse else None)
        models.append(model)
    runs = []
    for model in models:
        enc, targets = batch(model, "single_label")
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-2)
        model.train()
        torch.manual_seed(7)
        losses, grads = [], []
        for _ in range(3):
            loss = model.compute_loss(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]), targets)
            opt.zero_grad()
            loss.backward()
            grads += [p.grad.clone() for p in params]
            opt.step()
            losses.append(loss.detach())
        runs.append((losses, grads, [p.detach() for p in params]))
    (l0, g0, p0), (l1, g1, p1) = runs
    assert l0[0] != l0[-1]
    assert all(torch.equal(a, b) for a, b in zip(l0, l1, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(g0, g1, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(p0, p1, strict=True))
    from registry.methods.model import load_adapted_model

    trained = models[1]
    trained.save(tmp_path / "a", metadata={})
    loaded = load_adapted_model(tiny_models["bert"], tmp_path / "a")
    assert sum(isinstance(m, FusedLoraLinear) for m in loaded.modules()) == 4
    enc, _ = batch(trained, "single_label")
    trained.eval()
    with torch.no_grad():
        assert torch.equal(loaded(**enc), trained(**enc))
