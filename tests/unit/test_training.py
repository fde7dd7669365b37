"""run_training end to end on tiny models and tiny JSONL splits."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from registry.errors import BaseModelMismatch, InvalidInput  # noqa: E402
from registry.methods import read_adapter_meta  # noqa: E402
from workers.training import Progress, TrainingCancelled, TrainSpec, run_training  # noqa: E402
from workers.training.metrics import classification_metrics, regression_metrics  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

POS_WORDS = ["good", "great", "fun"]
NEG_WORDS = ["bad", "awful", "boring"]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sentiment_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        pos = rng.random() < 0.5
        word = rng.choice(POS_WORDS if pos else NEG_WORDS)
        rows.append({"text": f"the {rng.choice(['movie', 'film'])} was very {word}", "text_pair": None,
                     "label": "pos" if pos else "neg", "response": None})
    return rows


def pair_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """The label is in the second segment: learnable only if text_pair reaches the model."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        pos = rng.random() < 0.5
        rows.append({"text": f"the {rng.choice(['cat', 'dog', 'sky'])} was {rng.choice(POS_WORDS + NEG_WORDS)}",
                     "text_pair": f"it was very {rng.choice(POS_WORDS if pos else NEG_WORDS)}",
                     "label": "yes" if pos else "no", "response": None})
    return rows


def regression_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k = rng.randint(0, 3)
        rows.append({"text": " ".join(["very"] * k + ["good"]), "text_pair": None, "label": float(k),
                     "response": None})
    return rows


def lm_rows(n: int) -> list[dict[str, Any]]:
    return [{"text": "the cat sat on", "text_pair": None, "label": None, "response": "the mat"}
            for _ in range(n)]


def spec_for(tiny_models: dict[str, Path], tmp_path: Path, *, arch: str = "bert", task: str = "single_label",
             method: str = "houlsby", rows: list[dict[str, Any]] | None = None,
             dev: list[dict[str, Any]] | None = None, labels: list[str] | None = None,
             hp: dict[str, Any] | None = None, out: str = "out", **kw: Any) -> TrainSpec:
    rows = rows if rows is not None else sentiment_rows(96, 1)
    dev = dev if dev is not None else sentiment_rows(48, 2)
    return TrainSpec(
        base_dir=tiny_models[arch], base_sha256="sha-base", base_name="tiny", task_type=task,
        labels=labels if labels is not None else ["neg", "pos"],
        train_path=write_jsonl(tmp_path / f"{out}-train.jsonl", rows),
        dev_path=write_jsonl(tmp_path / f"{out}-dev.jsonl", dev), method=method,
        method_config=kw.pop("method_config", {}),
        hyperparameters={"epochs": 4, "batch_size": 16, "learning_rate": 1e-2, "seed": 7, **(hp or {})},
        out_dir=tmp_path / out, **kw,
    )


def run(spec: TrainSpec, progress: list[Progress] | None = None) -> Any:
    sink = progress if progress is not None else []
    return run_training(spec, on_progress=sink.append, should_stop=lambda: False)


def test_classification_end_to_end(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from registry.methods.model import load_adapted_model

    progress: list[Progress] = []
    spec = spec_for(tiny_models, tmp_path, hp={"eval_every": 6})
    result = run(spec, progress)
    assert result.metrics["accuracy"] >= 0.9, result.metrics
    assert {"macro_f1", "matthews_corr", "eval_loss", "train_loss"} <= set(result.metrics)
    assert result.metrics["train_steps"] == 24  # 96 rows / 16 x 4 epochs
    assert {f.name for f in result.files} == {"adapter_config.json", "adapter_model.safetensors",
                                              "head.safetensors"}
    assert all(f.parent == spec.out_dir for f in result.files)
    assert 0 < result.trainable_params < result.total_params
    assert progress[-1].step == progress[-1].total_steps == 24
    assert [p.step for p in progress if p.eval] == [6, 12, 18, 24]
    assert progress[0].loss is not None and progress[-1].loss is not None and progress[-1].loss < progress[0].loss
    assert [h["step"] for h in result.history] == [p.step for p in progress]
    meta = read_adapter_meta(spec.out_dir)
    assert meta["metadata"]["base_name"] == "tiny" and meta["base_model"]["sha256"] == "sha-base"
    model = load_adapted_model(spec.base_dir, spec.out_dir, base_sha256="sha-base")
    rows = sentiment_rows(20, 3)
    preds = model.predict([r["text"] for r in rows])
    assert sum(p == r["label"] for p, r in zip(preds, rows, strict=True)) >= 18


def test_deterministic_with_seed(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    a = run(spec_for(tiny_models, tmp_path, out="a", hp={"epochs": 1}))
    b = run(spec_for(tiny_models, tmp_path, out="b", hp={"epochs": 1}))
    assert (tmp_path / "a" / "adapter_model.safetensors").read_bytes() == \
        (tmp_path / "b" / "adapter_model.safetensors").read_bytes()
    assert a.metrics["eval_loss"] == b.metrics["eval_loss"]
    c = run(spec_for(tiny_models, tmp_path, out="c", hp={"epochs": 1, "seed": 8}))
    assert c.metrics["eval_loss"] != a.metrics["eval_loss"]


def test_text_pair(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    spec = spec_for(tiny_models, tmp_path, task="text_pair", rows=pair_rows(128, 1), dev=pair_rows(64, 2),
                    labels=["no", "yes"], method="lora", hp={"epochs": 6})
    result = run(spec)
    assert result.metrics["accuracy"] >= 0.75, result.metrics


def test_regression(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    spec = spec_for(tiny_models, tmp_path, arch="roberta", task="regression", rows=regression_rows(96, 1),
                    dev=regression_rows(48, 2), labels=[], method="pfeiffer", hp={"epochs": 6})
    result = run(spec)
    assert result.metrics["pearson"] > 0.8, result.metrics
    assert result.metrics["mse"] < 1.25 * 0.5  # variance of uniform {0..3} is 1.25
    assert "head.safetensors" in {f.name for f in result.files}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_causal_lm(tiny_models: dict[str, Path], tmp_path: Path, arch: str) -> None:
    spec = spec_for(tiny_models, tmp_path, arch=arch, task="causal_lm", rows=lm_rows(32), dev=lm_rows(8),
                    labels=[], method="lora", hp={"epochs": 10, "learning_rate": 2e-2})
    progress: list[Progress] = []
    result = run(spec, progress)
    first_eval = next(p.eval for p in progress if p.eval)
    assert result.metrics["eval_loss"] < 0.5 * first_eval["eval_loss"]
    assert result.metrics["perplexity"] < first_eval["perplexity"]
    assert "head.safetensors" not in {f.name for f in result.files}


def test_cancel_raises_and_writes_nothing(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    spec = spec_for(tiny_models, tmp_path)
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    seen: list[Progress] = []
    with pytest.raises(TrainingCancelled) as exc:
        run_training(spec, on_progress=seen.append, should_stop=should_stop)
    assert exc.value.step == 3
    assert max(p.step for p in seen) <= 3
    assert not spec.out_dir.exists()


def test_warm_start_continues_from_parent(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    parent = run(spec_for(tiny_models, tmp_path, out="parent"))
    parent_dir = tmp_path / "parent"
    # one step at a tiny learning rate: a warm start keeps the parent's accuracy, a cold one cannot
    warm = run(spec_for(tiny_models, tmp_path, out="warm", parent_adapter_dir=parent_dir,
                        hp={"max_steps": 1, "learning_rate": 1e-6, "head_learning_rate": 1e-6}))
    cold = run(spec_for(tiny_models, tmp_path, out="cold",
                        hp={"max_steps": 1, "learning_rate": 1e-6, "head_learning_rate": 1e-6}))
    assert parent.metrics["accuracy"] >= 0.9
    assert warm.metrics["accuracy"] >= parent.metrics["accuracy"] - 0.05
    assert cold.metrics["accuracy"] < 0.8
    assert read_adapter_meta(tmp_path / "warm")["metadata"]["warm_start"] is True
    # a new label: the adapter and the known labels' head rows carry over
    more = run(spec_for(tiny_models, tmp_path, out="more", parent_adapter_dir=parent_dir,
                        labels=["neg", "pos", "meh"], hp={"max_steps": 1, "learning_rate": 1e-6,
                                                          "head_learning_rate": 1e-6}))
    assert more.metrics["accuracy"] >= 0.85
    with pytest.raises(InvalidInput):
        run(spec_for(tiny_models, tmp_path, out="x", method="pfeiffer", parent_adapter_dir=parent_dir))
    with pytest.raises(InvalidInput):
        run(spec_for(tiny_models, tmp_path, out="y", parent_adapter_dir=parent_dir,
                     method_config={"bottleneck_size": 3}))
    bad_base = TrainSpec(**{**spec_for(tiny_models, tmp_path, out="z", parent_adapter_dir=parent_dir).__dict__,
                            "base_sha256": "other"})
    with pytest.raises(BaseModelMismatch):
        run(bad_base)


def test_bad_rows_and_hyperparameters_refused(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    bad = sentiment_rows(4, 1) + [{"text": "x", "text_pair": None, "label": "maybe", "response": None}]
    with pytest.raises(InvalidInput, match="line 5"):
        run(spec_for(tiny_models, tmp_path, rows=bad))
    with pytest.raises(InvalidInput) as exc:
        run(spec_for(tiny_models, tmp_path, hp={"learning_rte": 1.0}))
    assert exc.value.field == "hyperparameters.learning_rte"
    with pytest.raises(InvalidInput):
        run(spec_for(tiny_models, tmp_path, task="regression", labels=[]))  # string labels


def test_max_train_rows_and_max_steps(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    result = run(spec_for(tiny_models, tmp_path, hp={"max_train_rows": 32, "epochs": 10, "max_steps": 5}))
    assert result.metrics["train_steps"] == 5
    assert read_adapter_meta(tmp_path / "out")["metadata"]["train_rows"] == 32


def test_metrics() -> None:
    m = classification_metrics(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0]), 2)
    assert m["accuracy"] == 0.75
    assert m["matthews_corr"] == pytest.approx(0.57735, abs=1e-4)
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    perfect = classification_metrics(torch.tensor([2, 1, 0]), torch.tensor([2, 1, 0]), 3)
    assert perfect == {"accuracy": 1.0, "macro_f1": 1.0, "matthews_corr": 1.0}
    r = regression_metrics(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 6.0]))
    assert r["pearson"] == pytest.approx(1.0) and r["mse"] == pytest.approx(14 / 3)


def test_training_imports_no_service_libraries() -> None:
    code = ("import sys, workers.training.loop, workers.training.data; "
            "bad = [m for m in ('fastapi', 'sqlalchemy', 'celery') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


@pytest.mark.parametrize("method", ["houlsby", "lora"])
def test_up_lr_ratio_scales_only_the_up_projections(tiny_models: dict[str, Path], tmp_path: Path,
                                                    method: str) -> None:
    """LoRA+: the zero-initialised half (bottleneck ``up``, LoRA ``lora_B``) steps at ratio x the lr.
    After one AdamW step from a zero start each moved entry has moved by the lr of its group, and
    the other half has not moved at all (its gradient is zero while the up-projection is)."""
    from safetensors.torch import load_file

    lr = 1e-3
    saved = {}
    for ratio in (1.0, 8.0):
        out = f"{method}-{int(ratio)}"
        run(spec_for(tiny_models, tmp_path, method=method, out=out,
                     hp={"max_steps": 1, "learning_rate": lr, "head_learning_rate": 1e-6, "up_lr_ratio": ratio}))
        saved[ratio] = load_file(str(tmp_path / out / "adapter_model.safetensors"))
    up_key = ".adapter.up." if method == "houlsby" else ".lora_B."
    ups = [k for k in saved[1.0] if up_key in k]
    assert ups and len(ups) < len(saved[1.0])
    for key, before in saved[1.0].items():
        after = saved[8.0][key]
        if key in ups:
            moved = before.abs().max().item(), after.abs().max().item()
            assert moved[0] == pytest.approx(lr, rel=0.05), key  # Adam's eps shaves a little off
            assert moved[1] == pytest.approx(8 * moved[0], rel=1e-3), key
        else:
            assert torch.equal(before, after), key
    with pytest.raises(InvalidInput) as exc:
        run(spec_for(tiny_models, tmp_path, out="bad", hp={"up_lr_ratio": 0}))
    assert exc.value.field == "hyperparameters.up_lr_ratio"
