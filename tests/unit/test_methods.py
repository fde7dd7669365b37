"""Every adapter method on every supported tiny architecture (one parametrised table)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from registry.errors import BaseModelMismatch, InvalidInput  # noqa: E402
from registry.methods import METHOD_NAMES, read_adapter_meta, validate_method_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARCHS = ("bert", "roberta", "distilbert", "gpt2", "llama")
NO_PREFIX = ("distilbert",)
# method -> (config, fresh adapter is the identity, supports merge)
METHODS: dict[str, tuple[dict[str, Any], bool, bool]] = {
    "houlsby": ({"bottleneck_size": 8}, True, False),
    "pfeiffer": ({}, True, False),
    "parallel": ({}, True, False),
    "scaled_parallel": ({"bottleneck_size": 4}, True, False),
    "lora": ({"r": 4}, True, True),
    "ia3": ({}, True, True),  # (IA)^3 vectors start at one
    "prefix_tuning": ({"num_virtual_tokens": 4}, False, False),
    "mam": ({"num_virtual_tokens": 4}, False, False),
    "peft": ({"peft_type": "LOHA", "r": 4, "target_modules": None}, True, True),
    # Houlsby with PEFT's LoRA on the FFN projections (B = 0 and up = 0: still the identity)
    "houlsby+ffn_lora": ({"bottleneck_size": 4, "ffn_lora_rank": 4, "ffn_lora_out_rank": 2}, True, False),
    # the same LoRAs as DoRA: magnitudes start at the base columns' norms, B = 0 (the identity)
    "houlsby+ffn_dora": (
        {"bottleneck_size": 4, "ffn_lora_rank": 4, "ffn_lora_out_rank": 2, "ffn_lora_dora": True}, True, False,
    ),
}
# rows of the table that are a configuration of another method
VARIANT_OF = {"houlsby+ffn_lora": "houlsby", "houlsby+ffn_dora": "houlsby"}
LOHA_TARGETS = {"bert": ["query", "value"], "roberta": ["query", "value"], "distilbert": ["q_lin", "v_lin"],
                "gpt2": ["c_attn"], "llama": ["q_proj", "v_proj"]}

CASES = [
    pytest.param(method, arch, task, id=f"{method}-{arch}-{task}")
    for method in METHODS
    for arch in ARCHS
    for task in (("single_label", "causal_lm") if arch in ("gpt2", "llama") else ("single_label",))
    if not (method in ("prefix_tuning", "mam") and arch in NO_PREFIX)
]
assert {VARIANT_OF.get(m, m) for m in METHODS} == set(METHOD_NAMES)

TEXTS = ["the movie was very good", "the film was awful", "a great fun film", "this is boring",
         "not bad", "it was very very good", "the cat sat on the mat", "i was bored"]
POS = {"good", "great", "fun"}


def method_config(method: str, arch: str) -> dict[str, Any]:
    cfg = dict(METHODS[method][0])
    if method == "peft":
        cfg["target_modules"] = LOHA_TARGETS[arch]
        if arch == "gpt2":  # PEFT's LoHa cannot wrap GPT-2's Conv1D (see test_unsupported_combinations)
            cfg["peft_type"] = "LORA"
    return cfg


def build(tiny_models: dict[str, Path], method: str, arch: str, task: str, *, sha: str = "sha-A", **extra: Any):
    from registry.methods.model import build_adapted_model

    torch.manual_seed(0)
    cfg = {**method_config(method, arch), **extra}
    labels = ["neg", "pos"] if task == "single_label" else []
    return build_adapted_model(tiny_models[arch], task_type=task, labels=labels, method=VARIANT_OF.get(method, method),
                               method_config=cfg, base_sha256=sha, base_name="tiny")


def batch(model: Any, task: str) -> tuple[dict[str, Any], Any]:
    if task == "causal_lm":  # a learnable LM problem: one sentence to memorise
        enc = model.tokenize(["the cat sat on the mat and the dog sat on the sea"] * 4)
        targets = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    else:
        enc = model.tokenize(TEXTS)
        targets = torch.tensor([int(any(w in t.split() for w in POS)) for t in TEXTS])
    return enc, targets


def backbone_output(model: Any, enc: dict[str, Any]) -> Any:
    kwargs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if "token_type_ids" in enc and model.uses_token_types:
        kwargs["token_type_ids"] = enc["token_type_ids"]
    out = model.backbone(**kwargs)
    return out.logits if model.task_type == "causal_lm" else out.last_hidden_state


def train_steps(model: Any, task: str, n: int = 3, lr: float = 1e-2) -> list[float]:
    enc, targets = batch(model, task)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.1)
    model.train()
    losses = []
    for _ in range(n):
        loss = model.compute_loss(model(**enc), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    model.eval()
    return losses


@pytest.mark.parametrize(("method", "arch", "task"), CASES)
def test_fresh_adapter_identity(tiny_models: dict[str, Path], method: str, arch: str, task: str) -> None:
    from transformers import AutoModel, AutoModelForCausalLM

    model = build(tiny_models, method, arch, task).eval()
    ref_cls = AutoModelForCausalLM if task == "causal_lm" else AutoModel
    ref = ref_cls.from_pretrained(tiny_models[arch]).eval()
    enc, _ = batch(model, task)
    with torch.no_grad():
        got = backbone_output(model, enc)
        kwargs = {k: v for k, v in enc.items() if k != "token_type_ids" or model.uses_token_types}
        want = ref(**kwargs)
        want = want.logits if task == "causal_lm" else want.last_hidden_state
    assert got.shape == want.shape
    if METHODS[method][1]:
        assert torch.allclose(got, want, atol=1e-6, rtol=0), (got - want).abs().max()
    else:  # a random prefix changes the attention of every layer
        assert not torch.allclose(got, want, atol=1e-4)


@pytest.mark.parametrize(("method", "arch", "task"), CASES)
def test_only_adapter_and_head_get_gradients(tiny_models: dict[str, Path], method: str, arch: str,
                                             task: str) -> None:
    model = build(tiny_models, method, arch, task)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing to train"
    assert model.trainable_parameter_count() < 0.5 * model.total_parameter_count()
    for name in trainable:  # adapter modules, PEFT's weights or our head, never a base weight
        assert name.startswith("head.") or any(
            k in name for k in (".adapter.", "lora_", "ia3_", "hada_", "prompt_encoder")
        ), name
    enc, targets = batch(model, task)
    model.train()
    model.compute_loss(model(**enc), targets).backward()
    for name, p in model.named_parameters():
        if name in trainable:
            assert p.grad is not None, f"{name} got no gradient"
        else:
            assert p.grad is None, f"frozen {name} got a gradient"


@pytest.mark.parametrize(("method", "arch", "task"), CASES)
def test_base_unchanged_and_save_load_identical(tiny_models: dict[str, Path], tmp_path: Path, method: str,
                                                arch: str, task: str) -> None:
    from registry.methods.model import load_adapted_model

    model = build(tiny_models, method, arch, task)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    train_steps(model, task)
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"base weight {n} changed"
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n in before)

    files = model.save(tmp_path / "a", metadata={"note": "test"})
    names = {f.name for f in files}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names
    assert ("head.safetensors" in names) == (task != "causal_lm")
    meta = read_adapter_meta(tmp_path / "a")
    assert meta["method"] == VARIANT_OF.get(method, method) and meta["base_model"]["sha256"] == "sha-A"
    assert meta["metadata"] == {"note": "test"} and meta["task_type"] == task

    loaded = load_adapted_model(tiny_models[arch], tmp_path / "a", base_sha256="sha-A")
    enc, _ = batch(model, task)
    with torch.no_grad():
        assert torch.allclose(model(**enc), loaded(**enc), atol=1e-6, rtol=0)
    with pytest.raises(BaseModelMismatch):
        load_adapted_model(tiny_models[arch], tmp_path / "a", base_sha256="sha-B")


@pytest.mark.parametrize(("method", "arch", "task"), CASES)
def test_loss_falls(tiny_models: dict[str, Path], method: str, arch: str, task: str) -> None:
    model = build(tiny_models, method, arch, task)
    # a random prefix needs a larger step than weights that start at the identity
    losses = train_steps(model, task, n=25, lr=1e-1 if method == "prefix_tuning" else 1e-2)
    assert losses[-1] < 0.8 * losses[0], losses


MERGE_CASES = [c for c in CASES if METHODS[c.values[0]][2]]  # type: ignore[index]


@pytest.mark.parametrize(("method", "arch", "task"), MERGE_CASES)
def test_merge_unmerge_identical(tiny_models: dict[str, Path], method: str, arch: str, task: str) -> None:
    model = build(tiny_models, method, arch, task)
    train_steps(model, task)
    enc, _ = batch(model, task)
    with torch.no_grad():
        unmerged = model(**enc)
        with model.backbone.disable_adapter():
            plain = model(**enc)
        model.merge()
        merged = model(**enc)
        model.unmerge()
        again = model(**enc)
    assert not torch.allclose(unmerged, plain, atol=1e-5)  # the trained adapter does something
    assert torch.allclose(unmerged, merged, atol=1e-5, rtol=1e-4)
    assert torch.allclose(unmerged, again, atol=1e-5, rtol=1e-4)


def test_merge_refused_for_bottleneck(tiny_models: dict[str, Path]) -> None:
    model = build(tiny_models, "houlsby", "bert", "single_label")
    with pytest.raises(InvalidInput):
        model.merge()


PEFT_LOAD_CASES = [c for c in CASES if c.values[0] in ("lora", "ia3")]  # type: ignore[index]


@pytest.mark.parametrize(("method", "arch", "task"), PEFT_LOAD_CASES)
def test_peft_loads_lora_and_ia3_artifacts(tiny_models: dict[str, Path], tmp_path: Path, method: str,
                                           arch: str, task: str) -> None:
    from peft import PeftModel
    from transformers import AutoModel, AutoModelForCausalLM

    model = build(tiny_models, method, arch, task)
    train_steps(model, task)
    model.save(tmp_path, metadata={})
    base = (AutoModelForCausalLM if task == "causal_lm" else AutoModel).from_pretrained(tiny_models[arch])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. PEFT's "Unexpected keyword arguments"
        peft_model = PeftModel.from_pretrained(base, str(tmp_path)).eval()
    enc, _ = batch(model, task)
    kwargs = {k: v for k, v in enc.items() if k != "token_type_ids" or model.uses_token_types}
    with torch.no_grad():
        out = peft_model(**kwargs)
        got = out.logits if task == "causal_lm" else out.last_hidden_state
        assert torch.allclose(got, backbone_output(model, enc), atol=1e-6, rtol=0)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["peft_type"] == method.upper()


@pytest.mark.parametrize(("arch", "ins", "out"), [
    ("bert", ("intermediate.dense",), "output.dense.base_layer"),
    ("distilbert", ("ffn.lin1",), "ffn.lin2.base_layer"),
    ("llama", ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj.base_layer"),
])
def test_houlsby_ffn_lora_sits_on_the_ffn_of_adapted_layers_at_its_ranks(
    tiny_models: dict[str, Path], arch: str, ins: tuple[str, ...], out: str
) -> None:
    model = build(tiny_models, "houlsby", arch, "single_label", bottleneck_size=4, skip_layers=1,
                  ffn_lora_rank=6, ffn_lora_out_rank=3)
    lora = {n: tuple(p.shape) for n, p in model.backbone.named_parameters() if "lora_" in n and p.requires_grad}
    assert lora and not any(".0." in n for n in lora)  # the skipped layer has neither adapter nor LoRA
    hidden, inner = 32, 64
    for path in ins:  # rank 6 on the FFN input projection(s), rank 3 under the output adapter
        (a,) = [v for n, v in lora.items() if f".1.{path}.lora_A." in n]
        (b,) = [v for n, v in lora.items() if f".1.{path}.lora_B." in n]
        assert (a, b) == ((6, hidden), (inner, 6))
    (a,) = [v for n, v in lora.items() if f".1.{out}.lora_A." in n]
    assert a == (3, inner)
    assert len(lora) == 2 * (len(ins) + 1)
    # alpha = 2 x rank on each group: PEFT's scaling is 2 everywhere
    scales = {m.scaling["default"] for m in model.backbone.modules() if hasattr(m, "lora_A") and m.lora_A}
    assert scales == {2.0}
    # only the output LoRA, at its own rank
    only_out = build(tiny_models, "houlsby", arch, "single_label", bottleneck_size=4, ffn_lora_out_rank=2)
    names = [n for n, p in only_out.backbone.named_parameters() if "lora_A" in n]
    assert len(names) == 2 and all(out in n for n in names)


def test_houlsby_ffn_dora_trains_one_magnitude_per_output_unit(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """``ffn_lora_dora`` makes the FFN LoRAs DoRA: each LoRA'd projection gets a trained magnitude with
    one entry per output unit (64 on the FFN input projection, 32 on its output), the magnitudes move
    in training and travel in the artifact, and the loaded model gives the same outputs."""
    from safetensors.torch import load_file

    from registry.methods.model import load_adapted_model

    model = build(tiny_models, "houlsby", "bert", "single_label", bottleneck_size=4, ffn_lora_rank=4,
                  ffn_lora_out_rank=2, ffn_lora_dora=True)
    mags = {n: p for n, p in model.backbone.named_parameters() if "lora_magnitude_vector" in n}
    assert len(mags) == 2 * 2 and all(p.requires_grad for p in mags.values())  # 2 layers x 2 projections
    assert sorted(p.numel() for p in mags.values()) == [32, 32, 64, 64]
    before = {n: p.detach().clone() for n, p in mags.items()}
    train_steps(model, "single_label")
    assert all(not torch.equal(before[n], p) for n, p in mags.items())
    model.save(tmp_path / "a", metadata={})
    saved = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    assert sum("lora_magnitude_vector" in k for k in saved) == 4
    loaded = load_adapted_model(tiny_models["bert"], tmp_path / "a")
    assert loaded.method_config["ffn_lora_dora"] is True
    enc, _ = batch(model, "single_label")
    with torch.no_grad():
        assert torch.allclose(loaded(**enc), model(**enc), atol=1e-6, rtol=0)
    plain = build(tiny_models, "houlsby", "bert", "single_label", bottleneck_size=4, ffn_lora_rank=4,
                  ffn_lora_out_rank=2)
    extra = sum(p.numel() for p in model.parameters() if p.requires_grad) - sum(
        p.numel() for p in plain.parameters() if p.requires_grad)
    assert extra == 2 * (64 + 32)


def test_houlsby_ffn_lora_dropout_acts_in_training_only(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """``ffn_lora_dropout`` is PEFT's lora_dropout on the FFN LoRAs: it draws masks in training (two
    forward passes differ even with the base's dropout off) and is the identity in eval, and the option
    survives save -> load with the same eval outputs."""
    from registry.methods.model import load_adapted_model

    model = build(tiny_models, "houlsby", "bert", "single_label", bottleneck_size=4, ffn_lora_rank=4,
                  ffn_lora_out_rank=2, ffn_lora_dropout=0.5, base_dropout=False)
    drops = {(type(m), m.p) for n, m in model.backbone.named_modules() if n.endswith("lora_dropout.default")}
    assert drops == {(torch.nn.Dropout, 0.5)}  # torch's own: FastDropout is opt-in (docs/benchmarks.md)
    train_steps(model, "single_label")  # B moves off zero, so the LoRA path (and its dropout) counts
    enc, _ = batch(model, "single_label")
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model(**enc), model(**enc))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**enc), model(**enc))
        expected = model(**enc)
    model.save(tmp_path / "a", metadata={})
    loaded = load_adapted_model(tiny_models["bert"], tmp_path / "a")
    assert loaded.method_config["ffn_lora_dropout"] == 0.5
    loaded.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(**enc), expected, atol=1e-6, rtol=0)


def test_artifact_from_before_an_option_existed_still_loads(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """A Houlsby artifact written before ``ffn_lora_rank`` existed records no value for it: it loads,
    into a fresh model and into one already holding the base, with the new options at their defaults."""
    from registry.methods import META_NAMESPACE
    from registry.methods.model import load_adapted_model

    model = build(tiny_models, "houlsby", "bert", "single_label")
    train_steps(model, "single_label")
    model.save(tmp_path / "a", metadata={})
    path = tmp_path / "a" / "adapter_config.json"
    cfg = json.loads(path.read_text())
    recorded = cfg["auto_mapping"][META_NAMESPACE]["method_config"]
    for option in ("ffn_lora_rank", "ffn_lora_out_rank", "ffn_lora_dropout", "ffn_lora_dora", "train_biases"):
        del recorded[option]
    path.write_text(json.dumps(cfg))
    loaded = load_adapted_model(tiny_models["bert"], tmp_path / "a")
    assert loaded.method_config == model.method_config
    fresh = build(tiny_models, "houlsby", "bert", "single_label")
    fresh.load_adapter_weights(tmp_path / "a")
    enc, _ = batch(model, "single_label")
    with torch.no_grad():
        assert torch.allclose(model(**enc), fresh(**enc), atol=1e-6, rtol=0)
        assert torch.allclose(model(**enc), loaded(**enc), atol=1e-6, rtol=0)


def test_skip_layers_stops_backward_early(tiny_models: dict[str, Path]) -> None:
    from registry.methods.bottleneck import find_layers

    model = build(tiny_models, "houlsby", "bert", "single_label", skip_layers=1)
    _, layers = find_layers(model.base)
    assert not any(p.requires_grad for p in layers[0].parameters())  # no adapter in layer 0
    assert any(p.requires_grad for p in layers[1].parameters())
    seen: dict[int, bool] = {}

    def hook(i: int):  # type: ignore[no-untyped-def]
        def f(_m, _i, out):  # type: ignore[no-untyped-def]
            seen[i] = (out[0] if isinstance(out, tuple) else out).requires_grad
        return f

    for i, layer in enumerate(layers):
        layer.register_forward_hook(hook(i))
    enc, targets = batch(model, "single_label")
    model.train()
    model.compute_loss(model(**enc), targets).backward()
    assert seen == {0: False, 1: True}  # no autograd graph below the lowest adapter


def test_train_layer_norms(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from registry.methods.model import load_adapted_model

    model = build(tiny_models, "houlsby", "bert", "single_label", train_layer_norms=True)
    names = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert any("LayerNorm" in n for n in names) and any(".adapter." in n for n in names)
    assert not any("embeddings.LayerNorm" in n for n in names)
    train_steps(model, "single_label")
    model.save(tmp_path, metadata={})
    loaded = load_adapted_model(tiny_models["bert"], tmp_path)
    enc, _ = batch(model, "single_label")
    with torch.no_grad():
        assert torch.allclose(model(**enc), loaded(**enc), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("arch", "which", "skip"), [("bert", "all", 0), ("bert", "query_ffn", 1),
                                                  ("roberta", "query_ffn", 0), ("distilbert", "all", 1),
                                                  ("gpt2", "all", 0)])
def test_train_biases(tiny_models: dict[str, Path], tmp_path: Path, arch: str, which: str, skip: int) -> None:
    """BitFit on top of Houlsby: exactly the chosen biases of the adapted layers train (with the adapters and
    the FFN LoRAs), every other base weight stays as it was, and the artifact restores them."""
    from registry.methods.bottleneck import find_layers
    from registry.methods.model import load_adapted_model

    query = {"bert": "attention.self.query.", "roberta": "attention.self.query.", "distilbert": "attention.q_lin."}
    ffn_in = {"bert": "intermediate.dense.", "roberta": "intermediate.dense.", "distilbert": "ffn.lin1."}
    model = build(tiny_models, "houlsby+ffn_lora", arch, "single_label", train_biases=which, skip_layers=skip)
    plain = build(tiny_models, "houlsby+ffn_lora", arch, "single_label", skip_layers=skip)
    prefix, layers = find_layers(model.base)
    base_biases = {n for n, p in model.base.named_parameters() if p.requires_grad and n.endswith("bias")
                   and ".adapter." not in n and "lora_" not in n}
    adapted = [f"{prefix}.{i}." for i in range(skip, len(layers))]
    assert base_biases and all(any(n.startswith(a) for a in adapted) for n in base_biases), base_biases
    if which == "all":  # every bias of every adapted block: projections and LayerNorms
        want = {f"{i}.{n}" for i in range(skip, len(layers)) for n, _ in layers[i].named_parameters()
                if n.endswith("bias") and ".adapter." not in n and "lora_" not in n}
        assert len(base_biases) == len(want) and any("ln" in n.lower() or "norm" in n.lower() for n in base_biases)
    else:
        assert all(query[arch] in n or ffn_in[arch] in n for n in base_biases)
        assert sum(query[arch] in n for n in base_biases) == len(adapted)
    added = sum(p.numel() for n, p in model.base.named_parameters() if n in base_biases)
    assert model.trainable_parameter_count() == plain.trainable_parameter_count() + added
    assert not any(p.requires_grad for i in range(skip) for p in layers[i].parameters())

    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    before = {n: p.detach().clone() for n, p in model.base.named_parameters() if n in base_biases}
    train_steps(model, "single_label")
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert all(not torch.equal(p, before[n]) for n, p in model.base.named_parameters() if n in before)
    model.save(tmp_path, metadata={})
    assert read_adapter_meta(tmp_path)["method_config"]["train_biases"] == which
    loaded = load_adapted_model(tiny_models[arch], tmp_path)
    enc, _ = batch(model, "single_label")
    with torch.no_grad():
        assert torch.allclose(model(**enc), loaded(**enc), atol=1e-6, rtol=0)
        assert not torch.allclose(model(**enc), plain(**enc), atol=1e-4)


@pytest.mark.parametrize(("arch", "which", "match"), [("gpt2", "query_ffn", "fused"), ("llama", "all", "no bias"),
                                                      ("llama", "query_ffn", "has no bias")])
def test_train_biases_refused_where_the_block_lacks_them(tiny_models: dict[str, Path], arch: str, which: str,
                                                         match: str) -> None:
    with pytest.raises(InvalidInput, match=match) as exc:
        build(tiny_models, "houlsby", arch, "single_label", train_biases=which)
    assert exc.value.field == "method_config.train_biases" and repr(arch) in str(exc.value)


@pytest.mark.parametrize(("arch", "task"), [("bert", "single_label"), ("distilbert", "single_label"),
                                          ("gpt2", "causal_lm")])
def test_base_dropout_off_makes_training_forward_deterministic(tiny_models: dict[str, Path], tmp_path: Path,
                                                              arch: str, task: str) -> None:
    from registry.methods.model import load_adapted_model

    outputs = {}
    for base_dropout in (True, False):
        model = build(tiny_models, "houlsby", arch, task, base_dropout=base_dropout)
        train_steps(model, task, n=2)  # non-zero up-projections: the adapters now change the output
        enc, _ = batch(model, task)
        model.train()
        with torch.no_grad():
            outputs[base_dropout] = (model(**enc), model(**enc))
        if not base_dropout:
            assert model.method_config["base_dropout"] is False
            model.save(tmp_path, metadata={})
            assert read_adapter_meta(tmp_path)["method_config"]["base_dropout"] is False
            loaded = load_adapted_model(tiny_models[arch], tmp_path)
            model.eval()
            with torch.no_grad():
                assert torch.allclose(model(**enc), loaded(**enc), atol=1e-6, rtol=0)
    first, second = outputs[True]
    assert not torch.allclose(first, second)  # the tiny configs keep dropout 0.1: masks differ per pass
    first, second = outputs[False]
    assert torch.equal(first, second)


# the dropout on attention probabilities in each tiny architecture (module path, or the attention
# module's float ``attention_dropout`` that Llama-style attention hands its kernel)
ATTN_PROB_DROPOUT = {"bert": r"\.attention\.self\.dropout$", "roberta": r"\.attention\.self\.dropout$",
                     "distilbert": r"\.attention\.dropout$", "gpt2": r"\.attn\.attn_dropout$",
                     "llama": r"\.self_attn:attention_dropout$"}


def _dropouts(model: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            out[name] = module.p
        elif isinstance(getattr(module, "attention_dropout", None), float):
            out[f"{name}:attention_dropout"] = module.attention_dropout
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_base_attention_dropout_off_drops_only_attention_probabilities(tiny_models: dict[str, Path], tmp_path: Path,
                                                                       arch: str) -> None:
    import re

    import transformers as tf

    models = dict(tiny_models)
    if arch == "llama":  # the tiny Llama's attention_dropout is 0 by default: give it one to turn off
        cfg = tf.AutoConfig.from_pretrained(tiny_models["llama"])
        cfg.attention_dropout = 0.1
        models["llama"] = tmp_path / "llama"
        tf.AutoModelForCausalLM.from_config(cfg).save_pretrained(models["llama"])
        for f in tiny_models["llama"].iterdir():
            if "token" in f.name or f.name == "vocab.txt":
                (models["llama"] / f.name).write_bytes(f.read_bytes())
    task = "causal_lm" if arch in ("gpt2", "llama") else "single_label"
    kept = _dropouts(build(models, "houlsby", arch, task))
    model = build(models, "houlsby", arch, task, base_attention_dropout=False)
    off = _dropouts(model)
    assert kept.keys() == off.keys()
    changed = sorted(n for n in kept if kept[n] != off[n])
    assert len(changed) == 2, changed  # one per block of the two-layer model
    assert all(re.search(ATTN_PROB_DROPOUT[arch], n) for n in changed), changed
    assert all(kept[n] > 0 and off[n] == 0 for n in changed)
    if arch != "llama":  # Llama-style blocks have no hidden-state dropout at all
        assert any(p > 0 for n, p in off.items() if n not in changed)  # the hidden states keep theirs
    assert model.method_config["base_attention_dropout"] is False


@pytest.mark.parametrize("path", ["attention.self.no_such_dropout", "attention.self.query"])
def test_base_attention_dropout_refused_where_a_block_has_no_such_dropout(tiny_models: dict[str, Path],
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          path: str) -> None:
    # a block layout without the attention dropout (no such path, or a path that holds no dropout)
    # refuses this option only, not bottleneck adapters
    import dataclasses

    from registry.methods import bottleneck

    bert = dataclasses.replace(bottleneck._KINDS["bert"], attn_dropout=path)
    monkeypatch.setitem(bottleneck._KINDS, "bert", bert)
    assert build(tiny_models, "houlsby", "bert", "single_label").method_config["base_attention_dropout"] is True
    with pytest.raises(InvalidInput) as exc:
        build(tiny_models, "houlsby", "bert", "single_label", base_attention_dropout=False)
    assert exc.value.field == "method_config.base_attention_dropout"
    assert "'bert'" in str(exc.value) and path in str(exc.value)


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert", "gpt2"])
@pytest.mark.parametrize("attention_dropout", [True, False])
def test_base_hidden_dropout_sets_every_hidden_dropout_and_no_other(tiny_models: dict[str, Path], arch: str,
                                                                    attention_dropout: bool) -> None:
    import re

    task = "causal_lm" if arch == "gpt2" else "single_label"
    kw: dict[str, Any] = {"base_attention_dropout": attention_dropout, "ffn_lora_rank": 2, "ffn_lora_dropout": 0.05}
    before = _dropouts(build(tiny_models, "houlsby", arch, task, **kw))
    model = build(tiny_models, "houlsby", arch, task, base_hidden_dropout=0.35, **kw)
    after = _dropouts(model)
    assert before.keys() == after.keys()
    attn = {n for n in before if re.search(ATTN_PROB_DROPOUT[arch], n)}
    lora = {n for n in before if ".lora_dropout." in n}
    assert len(attn) == 2 and lora  # the tiny models have two blocks; the FFN LoRAs have their own dropout
    assert all(after[n] == before[n] for n in attn | lora)  # attention probabilities and LoRA inputs: as asked
    hidden = set(before) - attn - lora
    assert len(hidden) >= 3  # the embeddings' and at least one in each of the two blocks
    assert all(before[n] == 0.1 and after[n] == 0.35 for n in hidden), {n: (before[n], after[n]) for n in hidden}
    assert model.method_config["base_hidden_dropout"] == 0.35


def test_base_hidden_dropout_changes_only_the_rate(tiny_models: dict[str, Path]) -> None:
    # torch draws one number an element whatever the rate, so after a forward pass in training the random
    # stream is where it would be at the base's own rate: a seed's batches and later masks stay the same
    outs = {}
    for rate in (None, 0.3):
        model = build(tiny_models, "houlsby", "bert", "single_label", base_hidden_dropout=rate)
        model.train()
        block_out = next(m for n, m in model.named_modules() if n.endswith("layer.0.output"))
        x = torch.ones(4, 64, 32)
        torch.manual_seed(7)
        with torch.no_grad():
            h = block_out.dropout(x)
        outs[rate] = (h == 0, torch.rand(3))
    (low, after_low), (high, after_high) = outs[None], outs[0.3]
    assert 0.05 < low.float().mean() < 0.15 and 0.25 < high.float().mean() < 0.35
    assert bool((low & ~high).sum() == 0)  # what 0.1 drops, 0.3 drops too
    assert torch.equal(after_low, after_high)


def test_base_attention_dropout_off_makes_bert_attention_deterministic(tiny_models: dict[str, Path]) -> None:
    # what the option is for: the self-attention itself is deterministic in training (so PyTorch may
    # take the fused kernel), while the block's hidden-state dropout still draws masks
    for keep in (True, False):
        model = build(tiny_models, "houlsby", "bert", "single_label", base_attention_dropout=keep)
        model.train()
        attention = next(m for n, m in model.named_modules() if n.endswith("layer.0.attention.self"))
        block_out = next(m for n, m in model.named_modules() if n.endswith("layer.0.output"))
        x = torch.randn(2, 5, 32)
        with torch.no_grad():
            a1, a2 = attention(x)[0], attention(x)[0]
            h1, h2 = block_out.dropout(x), block_out.dropout(x)
        assert torch.equal(a1, a2) is (not keep)
        assert not torch.equal(h1, h2)


def test_predict_returns_label_names_and_floats(tiny_models: dict[str, Path]) -> None:
    from registry.methods.model import build_adapted_model

    clf = build(tiny_models, "pfeiffer", "bert", "single_label")
    preds = clf.predict(TEXTS)
    assert len(preds) == len(TEXTS) and set(preds) <= {"neg", "pos"}
    reg = build_adapted_model(tiny_models["roberta"], task_type="regression", labels=[], method="lora",
                              method_config={}, base_sha256="x")
    values = reg.predict(TEXTS[:3])
    assert len(values) == 3 and all(isinstance(v, float) for v in values)
    pair = build_adapted_model(tiny_models["bert"], task_type="text_pair", labels=["a", "b", "c"],
                               method="houlsby", method_config={}, base_sha256="x")
    assert set(pair.predict([("the cat", "the dog"), ("good", "bad")])) <= {"a", "b", "c"}
    lm = build(tiny_models, "lora", "gpt2", "causal_lm")
    out = lm.predict(["the cat"], max_new_tokens=3)
    assert len(out) == 1 and isinstance(out[0], str)


def test_fast_weight_swap(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    a = build(tiny_models, "houlsby", "bert", "single_label")
    train_steps(a, "single_label")
    a.save(tmp_path / "a", metadata={})
    b = build(tiny_models, "houlsby", "bert", "single_label")
    enc, _ = batch(a, "single_label")
    with torch.no_grad():
        assert not torch.allclose(a(**enc), b(**enc))
        b.load_adapter_weights(tmp_path / "a")
        assert torch.allclose(a(**enc), b(**enc), atol=1e-6, rtol=0)
    other = build(tiny_models, "pfeiffer", "bert", "single_label")
    with pytest.raises(InvalidInput):
        other.load_adapter_weights(tmp_path / "a")


@pytest.mark.parametrize("damage", ["truncate", "delete"])
@pytest.mark.parametrize("name", ["adapter_model.safetensors", "head.safetensors"])
@pytest.mark.parametrize("method", ["houlsby", "lora"])
def test_damaged_weights_refused_and_model_unchanged(tiny_models: dict[str, Path], tmp_path: Path, method: str,
                                                     name: str, damage: str) -> None:
    a = build(tiny_models, method, "bert", "single_label")
    train_steps(a, "single_label")
    a.save(tmp_path / "a", metadata={})
    path = tmp_path / "a" / name
    if damage == "truncate":  # a cut-off upload or download
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.unlink()
    b = build(tiny_models, method, "bert", "single_label")
    before = {n: p.detach().clone() for n, p in b.named_parameters()}
    with pytest.raises(InvalidInput, match=name) as exc:
        b.load_adapter_weights(tmp_path / "a")
    assert exc.value.field == "adapter"
    # refused before anything was copied: the model still serves its previous adapter and head
    assert all(torch.equal(p, before[n]) for n, p in b.named_parameters())


# --------------------------------------------------------------------------- refusals


def test_unsupported_combinations(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    import transformers as tf

    for method in ("prefix_tuning", "mam"):
        with pytest.raises(InvalidInput, match="distilbert"):
            build(tiny_models, method, "distilbert", "single_label")
    with pytest.raises(InvalidInput) as exc:
        build(tiny_models, "houlsby", "bert", "causal_lm")
    assert exc.value.field == "task_type"
    albert = tmp_path / "albert"
    tf.AlbertModel(tf.AlbertConfig(vocab_size=64, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=64)).save_pretrained(albert)
    for f in ("vocab.txt", "tokenizer_config.json", "tokenizer.json", "special_tokens_map.json"):
        if (tiny_models["bert"] / f).exists():
            (albert / f).write_bytes((tiny_models["bert"] / f).read_bytes())
    with pytest.raises(InvalidInput, match="albert"):
        build({"albert": albert}, "houlsby", "albert", "single_label")
    with pytest.raises(InvalidInput) as exc:
        build(tiny_models, "houlsby", "bert", "single_label", skip_layers=2)
    assert exc.value.field == "method_config.skip_layers"
    with pytest.raises(InvalidInput) as exc:
        build(tiny_models, "lora", "bert", "single_label", target_modules=["no_such_module"])
    assert exc.value.field == "method_config"
    with pytest.raises(InvalidInput) as exc:
        build(tiny_models, "peft", "gpt2", "single_label", peft_type="LOHA")
    assert exc.value.field == "method_config"


def test_pickled_weights_refused(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from registry.methods.model import build_adapted_model, load_adapted_model

    base = tmp_path / "base"
    base.mkdir()
    for f in tiny_models["bert"].iterdir():
        if f.name != "model.safetensors":
            (base / f.name).write_bytes(f.read_bytes())
    (base / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(InvalidInput, match="pytorch_model.bin"):
        build_adapted_model(base, task_type="single_label", labels=["a", "b"], method="houlsby",
                            method_config={}, base_sha256="x")
    model = build(tiny_models, "houlsby", "bert", "single_label")
    model.save(tmp_path / "a", metadata={})
    (tmp_path / "a" / "adapter_model.safetensors").rename(tmp_path / "a" / "adapter_model.bin")
    with pytest.raises(InvalidInput, match="adapter_model.bin"):
        load_adapted_model(tiny_models["bert"], tmp_path / "a")


@pytest.mark.parametrize(
    ("method", "config", "field"),
    [
        ("nope", {}, "method"),
        ("houlsby", {"reduction_factr": 4}, "method_config.reduction_factr"),
        ("houlsby", {"reduction_factor": "16"}, "method_config.reduction_factor"),
        ("houlsby", {"reduction_factor": True}, "method_config.reduction_factor"),
        ("houlsby", {"reduction_factor": 0}, "method_config.reduction_factor"),
        ("houlsby", {"reduction_factor": 4, "bottleneck_size": 8}, "method_config.bottleneck_size"),
        ("pfeiffer", {"non_linearity": "elu"}, "method_config.non_linearity"),
        ("parallel", {"skip_layers": -1}, "method_config.skip_layers"),
        ("scaled_parallel", {"scaling": float("nan")}, "method_config.scaling"),
        ("houlsby", {"train_layer_norms": "yes"}, "method_config.train_layer_norms"),
        ("houlsby", {"train_biases": True}, "method_config.train_biases"),
        ("pfeiffer", {"train_biases": "some"}, "method_config.train_biases"),
        ("lora", {"r": 0}, "method_config.r"),
        ("lora", {"lora_dropout": 1.5}, "method_config.lora_dropout"),
        ("houlsby", {"base_dropout": "no"}, "method_config.base_dropout"),
        ("houlsby", {"base_attention_dropout": 0}, "method_config.base_attention_dropout"),
        ("houlsby", {"base_hidden_dropout": 0.95}, "method_config.base_hidden_dropout"),
        ("pfeiffer", {"base_hidden_dropout": "0.2"}, "method_config.base_hidden_dropout"),
        ("houlsby", {"base_hidden_dropout": 0.2, "base_dropout": False}, "method_config.base_hidden_dropout"),
        ("houlsby", {"ffn_lora_rank": -1}, "method_config.ffn_lora_rank"),
        ("houlsby", {"ffn_lora_out_rank": 1.5}, "method_config.ffn_lora_out_rank"),
        ("pfeiffer", {"ffn_lora_rank": 4}, "method_config.ffn_lora_rank"),
        ("houlsby", {"ffn_lora_rank": 4, "ffn_lora_dropout": 0.95}, "method_config.ffn_lora_dropout"),
        ("houlsby", {"ffn_lora_dropout": 0.1}, "method_config.ffn_lora_dropout"),  # no FFN LoRA to drop out
        ("houlsby", {"ffn_lora_rank": 4, "ffn_lora_dora": 1}, "method_config.ffn_lora_dora"),
        ("houlsby", {"ffn_lora_dora": True}, "method_config.ffn_lora_dora"),  # no FFN LoRA to decompose
        ("lora", {"target_modules": []}, "method_config.target_modules"),
        ("lora", {"target_modules": ["../x y"]}, "method_config.target_modules"),
        ("lora", {"bias": "some"}, "method_config.bias"),
        ("ia3", {"feedforward_modules": ["lin2"]}, "method_config.feedforward_modules"),
        ("prefix_tuning", {"num_virtual_tokens": 0}, "method_config.num_virtual_tokens"),
        ("mam", {"scaling": -1}, "method_config.scaling"),
        ("peft", {}, "method_config.peft_type"),
        ("peft", {"peft_type": "ADALORA"}, "method_config.peft_type"),
        ("peft", {"peft_type": "LORA", "task_type": "SEQ_CLS"}, "method_config.task_type"),
        ("peft", {"peft_type": "LORA", "r": float("inf")}, "method_config.r"),
    ],
)
def test_validate_method_config_refusals(method: str, config: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        validate_method_config(method, config)
    assert exc.value.field == field


def test_validate_method_config_defaults_and_idempotence() -> None:
    for method in METHOD_NAMES:
        cfg = {"peft_type": "loha"} if method == "peft" else {}
        once = validate_method_config(method, cfg)
        assert validate_method_config(method, once) == once
    assert validate_method_config("houlsby", {})["reduction_factor"] == 16
    assert validate_method_config("scaled_parallel", {})["scaling"] == 4.0
    assert validate_method_config("houlsby", {"bottleneck_size": 24}) == {
        "reduction_factor": None, "bottleneck_size": 24, "non_linearity": "swish", "skip_layers": 0,
        "train_layer_norms": False, "train_biases": "none", "base_dropout": True, "base_attention_dropout": True,
        "base_hidden_dropout": None,
        "ffn_lora_rank": 0, "ffn_lora_out_rank": 0,
        "ffn_lora_dropout": 0.0, "ffn_lora_dora": False,
    }
    assert validate_method_config("houlsby", {"base_dropout": False})["base_dropout"] is False
    assert validate_method_config("peft", {"peft_type": "loha", "r": 4}) == {"peft_type": "LOHA", "r": 4}


def test_validation_does_not_import_torch() -> None:
    code = ("import sys, registry.methods as m; m.validate_method_config('lora', {}); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


@pytest.mark.parametrize(
    ("peft_config", "arch", "task"),
    [
        ({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 4}, "bert", "single_label"),
        ({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 4}, "gpt2", "causal_lm"),
        ({"peft_type": "P_TUNING", "num_virtual_tokens": 4, "encoder_hidden_size": 16}, "roberta", "single_label"),
        ({"peft_type": "VERA", "r": 4, "target_modules": ["query", "value"]}, "roberta", "single_label"),
        ({"peft_type": "LOKR", "r": 4, "target_modules": ["q_proj", "v_proj"]}, "llama", "causal_lm"),
    ],
)
def test_peft_passthrough_types(tiny_models: dict[str, Path], tmp_path: Path, peft_config: dict[str, Any],
                                arch: str, task: str) -> None:
    from registry.methods.model import build_adapted_model, load_adapted_model

    torch.manual_seed(0)
    model = build_adapted_model(tiny_models[arch], task_type=task, labels=["neg", "pos"] if task != "causal_lm"
                                else [], method="peft", method_config=peft_config, base_sha256="x")
    enc, targets = batch(model, task)
    with torch.no_grad():
        out = model(**enc)
    assert out.shape[:2] == ((len(TEXTS), 2) if task != "causal_lm" else tuple(enc["input_ids"].shape))
    train_steps(model, task)
    model.save(tmp_path, metadata={})
    loaded = load_adapted_model(tiny_models[arch], tmp_path)
    with torch.no_grad():
        assert torch.allclose(model(**enc), loaded(**enc), atol=1e-6, rtol=0)
