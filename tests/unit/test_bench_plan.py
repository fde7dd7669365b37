"""Issue #3's confirmatory plan (bench/methods.py ``plan`` and ``verdict``): group-sequential critical
values that hold their level, and a verdict that reads only the plan's seeds at the plan's looks."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.fixtures.bench import bench_methods

HYBRID = "houlsby11_ffnlora_ldrop3"
LRS = {"full": {"sst2": 1e-4, "cola": 1e-4, "subj": 5e-5}, HYBRID: {"sst2": 1e-3, "cola": 5e-4, "subj": 3e-3}}


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return bench_methods()


def test_one_look_is_the_fixed_sample_t_test(bench: ModuleType) -> None:
    # a single look at 10 seeds: the critical value is Student t's 97.5 % quantile with 9 df, 2.262
    for shape in ("obrien-fleming", "pocock"):
        (c,) = bench.group_sequential_bounds([10], 0.025, shape, sims=200_000, rng_seed=3)
        assert c == pytest.approx(2.262, abs=0.03)
    assert bench._t975(40) == pytest.approx(2.021, abs=1e-3)  # past the table: the expansion
    with pytest.raises(ValueError, match="rise strictly"):
        bench.group_sequential_bounds([10, 10], 0.025)


def test_registered_plan_recomputes_and_holds_its_level(bench: ModuleType) -> None:
    plan = bench.load_plan()
    assert plan["first_seed"] == 63 and plan["margin"] == 0.5 and set(plan["configs"]) < set(plan["lrs"])
    crit = bench.group_sequential_bounds(plan["looks"], plan["alpha"], plan["shape"], plan["sims"], plan["rng_seed"])
    assert crit == plan["critical"]
    # O'Brien-Fleming: strict at the first look, close to a fixed-sample test at the last
    assert crit == sorted(crit, reverse=True) and crit[0] > 4 and crit[-1] < 2.2
    # an independent simulation on the boundary (true gap exactly -0.5): "met" about 2.5 % of the time
    at_margin = bench.sequential_power(plan["looks"], crit, -0.5, 0.4, 0.5, sims=100_000, rng_seed=99)
    assert at_margin["met"] == pytest.approx(0.025, abs=0.004)
    assert at_margin["missed"] == pytest.approx(0.025, abs=0.004)
    # well inside the margin it almost always says so, and before the last look
    inside = bench.sequential_power(plan["looks"], crit, -0.2, 0.4, 0.5, sims=20_000)
    assert inside["met"] > 0.99 and inside["seeds"] < plan["looks"][-1]


def test_the_old_rule_claims_too_often(bench: ModuleType) -> None:
    # one look at the 95 % interval: 2.5 %; a look after every seed from 4 to 19: several times that
    assert bench.peeking_error(19, 19, sims=100_000) == pytest.approx(0.025, abs=0.003)
    assert bench.peeking_error(4, 19, sims=100_000) > 0.08


def test_plan_figure_draws_what_each_look_needs(bench: ModuleType, tmp_path: Path) -> None:
    plan = bench.load_plan()
    # at sd 0.40 the first look needs a mean gap above -0.5 + 4.705 * 0.4 / sqrt(13) = +0.022
    (n, met, missed), *_, (n_last, met_last, _) = bench.plan_boundaries(plan, 0.40)
    assert (n, n_last) == (13, 65)
    assert met == pytest.approx(0.022, abs=1e-3) and missed == pytest.approx(-1.022, abs=1e-3)
    assert -0.5 < met_last < -0.39
    svg = tmp_path / "plan.svg"
    bench._svg_plan(plan, {"a": 0.40, "b": 0.48}, {"hybrid": -0.35}, svg)
    text = svg.read_text()
    titles = re.findall(r"<title>(\w), (\d+) seeds: (met above|missed below) ([+-][\d.]+)</title>", text)
    assert len(titles) == 2 * 2 * len(plan["looks"])
    assert ("a", "13", "met above", "+0.022") in titles and "hybrid -0.35" in text


def _plan(tmp_path: Path, looks: list[int], critical: list[float]) -> dict[str, object]:
    plan = {
        "baseline": "full", "configs": {HYBRID: "target 1"}, "lrs": LRS, "first_seed": 63,
        "hp": {"epochs": 3, "batch_size": 32, "max_length": 128, "warmup_ratio": 0.06, "weight_decay": 0.0},
        "looks": looks, "shape": "obrien-fleming", "alpha": 0.025, "margin": 0.5, "sims": 1000, "rng_seed": 1,
        "critical": critical, "results": "unused",
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    return plan


def _write(
    path: Path, seed: int, gap: float, *, device: str = "cpu", skip: tuple[str, str] | None = None,
    lr_scale: float = 1.0, hp: dict[str, object] | None = None,
) -> None:
    """One seed's six runs: full at 0.80 on every task, the hybrid ``gap`` points below on each."""
    runs = []
    for config, acc in (("full", 0.80), (HYBRID, 0.80 + gap / 100)):
        for task, lr in LRS[config].items():
            if (config, task) == skip:
                continue
            runs.append({"config": config, "task": task, "lr": lr * lr_scale, "seed": seed,
                         "select": {"accuracy": acc, "matthews_corr": acc}, "report": {"accuracy": acc}})
    meta_hp = {"epochs": 3, "batch_size": 32, "max_length": 128, "warmup_ratio": 0.06, "seed": seed, **(hp or {})}
    path.write_text(json.dumps({"meta": {"hp": meta_hp, "device": device}, "runs": runs}))


def _verdict(bench: ModuleType, tmp_path: Path, files: list[Path], svg: Path | None = None) -> dict[str, Any]:
    out = tmp_path / "verdict.json"
    bench.cmd_verdict(argparse.Namespace(plan=str(tmp_path / "plan.json"), files=[str(f) for f in files],
                                         out=str(out), svg=str(svg) if svg else None))
    return dict(json.loads(out.read_text())[HYBRID])


def test_verdict_reads_the_gap_only_at_the_looks(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _plan(tmp_path, [3, 6], [4.0, 2.5])
    files = []
    for i, gap in enumerate([-0.1, -0.2, -0.15, -0.1, -0.2]):
        files.append(tmp_path / f"s{63 + i}.json")
        _write(files[-1], 63 + i, gap)
    # five seeds: the look at 3 is read (and here decides), nothing between looks is
    v = _verdict(bench, tmp_path, files[:2])
    assert v["verdict"] == "waiting" and v["looks"] == [] and v["next_look"] == 3
    out = capsys.readouterr().out
    assert "only at its looks" in out and "mean" not in out and "next seed no run has started: 65" in out
    v = _verdict(bench, tmp_path, files)
    assert v["seeds"] == [63, 64, 65, 66, 67] and v["count_stops_at"] == "seed 68 lacks full sst2, full cola, " \
        f"full subj, {HYBRID} sst2, {HYBRID} cola, {HYBRID} subj"
    (look,) = v["looks"]
    assert look["seeds"] == 3 and look["gap"] == pytest.approx(-0.15)
    assert v["verdict"] == "met" and -0.5 < look["interval"][0] < look["interval"][1] < 0


def test_verdict_says_missed_and_not_shown(bench: ModuleType, tmp_path: Path) -> None:
    _plan(tmp_path, [3, 6], [4.0, 2.5])
    far = [tmp_path / f"far{s}.json" for s in range(63, 66)]
    for f, (s, gap) in zip(far, enumerate([-1.2, -1.3, -1.25], start=63), strict=True):
        _write(f, s, gap)
    assert _verdict(bench, tmp_path, far)["verdict"] == "missed"
    edge = [tmp_path / f"edge{s}.json" for s in range(63, 69)]
    for f, (s, gap) in zip(edge, enumerate([-0.1, -0.9, -0.3, -0.7, -0.5, -0.5], start=63), strict=True):
        _write(f, s, gap)
    svg = tmp_path / "verdict.svg"
    v = _verdict(bench, tmp_path, edge, svg=svg)
    assert v["verdict"] == "not shown" and [look["seeds"] for look in v["looks"]] == [3, 6]
    assert all(look["decision"] is None for look in v["looks"])
    # the figure draws each look's mean and interval (bar and point carry the same tooltip), and the verdict
    tips = re.findall(rf"<title>{HYBRID}, look at (\d+) seeds: ([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\] "
                      r"-> ([\w ]+)</title>", svg.read_text())
    expected = [(str(look["seeds"]), f"{look['gap']:+.2f}", f"{look['interval'][0]:+.2f}",
                 f"{look['interval'][1]:+.2f}", "go on") for look in v["looks"]]
    assert tips == [e for e in expected for _ in range(2)] and tips[2][1] == "-0.50"
    assert "target 1: not shown" in svg.read_text()


def test_a_seed_begun_cannot_be_left_out(bench: ModuleType, tmp_path: Path) -> None:
    # seed 64 lacks the hybrid's SUBJ: seeds 65-66 do not count until it is run, so a bad seed seen in
    # part cannot be dropped for the next one
    _plan(tmp_path, [3, 6], [4.0, 2.5])
    files = [tmp_path / f"s{s}.json" for s in range(63, 67)]
    for f, s in zip(files, range(63, 67), strict=True):
        _write(f, s, -0.1, skip=(HYBRID, "subj") if s == 64 else None)
    v = _verdict(bench, tmp_path, files)
    assert v["seeds"] == [63] and v["count_stops_at"] == f"seed 64 lacks {HYBRID} subj" and v["verdict"] == "waiting"


@pytest.mark.parametrize(
    ("kwargs", "seed", "message"),
    [
        ({"lr_scale": 3.0}, 63, "the plan fixes"),
        ({"hp": {"epochs": 6}}, 63, r"epochs 6 \(plan: 3\)"),
        ({"hp": {"max_steps": 2}}, 63, r"max_steps 2 \(plan: None\)"),  # a smoke run
        ({}, 62, "counts seeds from 63"),
    ],
)
def test_verdict_refuses_runs_outside_the_plan(
    bench: ModuleType, tmp_path: Path, kwargs: dict[str, object], seed: int, message: str
) -> None:
    _plan(tmp_path, [3, 6], [4.0, 2.5])
    _write(tmp_path / "bad.json", seed, -0.1, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(SystemExit, match=message):
        _verdict(bench, tmp_path, [tmp_path / "bad.json"])


def test_verdict_refuses_a_seed_run_twice_or_split_over_devices(bench: ModuleType, tmp_path: Path) -> None:
    _plan(tmp_path, [3, 6], [4.0, 2.5])
    _write(tmp_path / "cpu.json", 63, -0.1)
    _write(tmp_path / "gpu.json", 63, -0.1, device="cuda")
    with pytest.raises(SystemExit, match="in the results twice"):
        _verdict(bench, tmp_path, [tmp_path / "cpu.json", tmp_path / "gpu.json"])
    # the hybrid's runs on the CPU, full fine-tuning's on the GPU
    _write(tmp_path / "hyb.json", 63, -0.1, skip=None)
    d = json.loads((tmp_path / "hyb.json").read_text())
    full = {**d, "meta": {**d["meta"], "device": "cuda"}, "runs": [r for r in d["runs"] if r["config"] == "full"]}
    hyb = {**d, "runs": [r for r in d["runs"] if r["config"] == HYBRID]}
    (tmp_path / "full.json").write_text(json.dumps(full))
    (tmp_path / "hyb.json").write_text(json.dumps(hyb))
    with pytest.raises(SystemExit, match="a pair shares one device"):
        _verdict(bench, tmp_path, [tmp_path / "full.json", tmp_path / "hyb.json"])
