"""The statistics behind the multi-seed table in docs/benchmarks.md (bench/methods.py ``seeds``)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.fixtures.bench import bench_methods


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return bench_methods()


def test_paired_interval_matches_student_t(bench: ModuleType) -> None:
    # diffs -1, 0, +1: mean 0, sd 1, se 1/sqrt(3), t(0.975, 2) = 4.303
    d, lo, hi = bench.paired_interval([-1.0, 0.0, 1.0])
    assert d == 0.0
    assert hi == pytest.approx(4.303 / 3**0.5, rel=1e-6)
    assert lo == pytest.approx(-hi)
    with pytest.raises(ValueError):
        bench.paired_interval([0.5])


def _run(config: str, task: str, lr: float, sel: float, rep: float, seed: int | None) -> dict[str, object]:
    r: dict[str, object] = {
        "config": config,
        "task": task,
        "lr": lr,
        "select": {"accuracy": sel, "matthews_corr": sel},
        "report": {"accuracy": rep, "matthews_corr": rep},
    }
    if seed is not None:
        r["seed"] = seed
    return r


def test_seed_table_keeps_the_protocol_pick_per_seed(bench: ModuleType, tmp_path: Path) -> None:
    # an old grid file records its seed only in meta; the protocol keeps the best lr on "select"
    grid = {
        "meta": {"hp": {"seed": 42}},
        "runs": [
            _run("houlsby", "sst2", 1e-3, 0.80, 0.90, None),
            _run("houlsby", "sst2", 3e-3, 0.85, 0.70, None),
            {"config": "houlsby", "task": "sst2", "lr": 5e-4, "error": "boom"},
        ],
    }
    rerun = {"meta": {"hp": {"seed": 43}}, "runs": [_run("houlsby", "sst2", 3e-3, 0.5, 0.6, 43)]}
    (tmp_path / "a.json").write_text(json.dumps(grid))
    (tmp_path / "b.json").write_text(json.dumps(rerun))
    table = bench.seed_table([str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert set(table) == {("houlsby", "sst2", 42), ("houlsby", "sst2", 43)}
    assert table[("houlsby", "sst2", 42)]["report"]["accuracy"] == 0.70  # picked on select, not report
    assert table[("houlsby", "sst2", 43)]["report"]["accuracy"] == 0.6


def test_seeds_command_pairs_by_seed_and_draws(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = []
    for seed, (full, ad) in {42: (0.80, 0.79), 43: (0.82, 0.80), 44: (0.81, 0.81)}.items():
        for task in bench.TASKS:
            runs.append(_run("full", task, 1e-4, full, full, seed))
            runs.append(_run("houlsby", task, 1e-3, ad, ad, seed))
    # seed 45 lacks two tasks for houlsby: it must not enter the paired interval
    runs.append(_run("houlsby", "sst2", 1e-3, 0.99, 0.99, 45))
    (tmp_path / "r.json").write_text(json.dumps({"runs": runs}))
    import argparse

    out, svg = tmp_path / "s.json", tmp_path / "s.svg"
    args = argparse.Namespace(
        files=[str(tmp_path / "r.json")],
        baseline="full",
        svg=str(svg),
        out=str(out),
        only_seeds=None,
        margin=0.5,
        tasks=None,
        configs=None,
        split="report",
        same=None,
    )
    bench.cmd_seeds(args)
    summary = json.loads(out.read_text())
    assert summary["houlsby"]["seeds"] == [42, 43, 44]
    assert summary["houlsby"]["diffs"] == pytest.approx([-1.0, -2.0, 0.0])
    d, lo, hi = bench.paired_interval([-1.0, -2.0, 0.0])
    assert summary["houlsby"]["diff"] == pytest.approx(d)
    assert summary["houlsby"]["ci95"] == pytest.approx([lo, hi])
    assert "over 3 seeds" in capsys.readouterr().out
    text = svg.read_text()
    # a dot per (task, configuration, seed), and one per seed with every task in the mean panel
    assert text.startswith("<svg") and text.count("<circle") == 3 * 3 * 2 + 1 + 3 * 2
    assert "stroke-dasharray" in text  # full fine-tuning's mean minus the margin


def test_seed_figure_keeps_each_column_apart_and_coloured(bench: ModuleType, tmp_path: Path) -> None:
    # twenty seeds of three configurations, two of them without a fixed colour: before, their dots ran
    # into the next column (and past the panel) and both were drawn in the same green
    import re

    configs = ["full", "hybrid_a", "hybrid_b"]
    table = {
        (c, task, seed): {"report": {"accuracy": 0.8 + 0.001 * seed}}
        for c in configs for task in bench.TASKS for seed in range(20)
    }
    svg = tmp_path / "many.svg"
    bench._svg_seeds(table, configs, svg, "full", 0.5)
    text = svg.read_text()
    dots = re.findall(r'<circle cx="([\d.]+)" [^>]*fill="(#[0-9a-f]{6})"[^>]*><title>(\S+) seed', text)
    assert len(dots) == 3 * 20 * (len(bench.TASKS) + 1)
    colour = {c: {f for _, f, cc in dots if cc == c} for c in configs}
    assert all(len(v) == 1 for v in colour.values()) and len({next(iter(v)) for v in colour.values()}) == 3
    # per panel, every dot lies inside its own third of the 200-px plot
    for panel in range(len(bench.TASKS) + 1):
        x0 = 50 + panel * 250
        for j, c in enumerate(configs):
            xs = [float(x) for x, _, cc in dots if cc == c and x0 <= float(x) <= x0 + 200]
            assert len(xs) == 20
            assert min(xs) >= x0 + 200 * j / 3 and max(xs) <= x0 + 200 * (j + 1) / 3


def test_seeds_command_on_one_task_draws_that_task_only(bench: ModuleType, tmp_path: Path) -> None:
    # a screen run on SST-2 only, next to a baseline file that also holds CoLA and another configuration
    runs = [_run("full", "cola", 1e-4, 0.7, 0.7, 43), _run("pfeiffer", "sst2", 1e-3, 0.8, 0.8, 43)]
    for seed in (43, 44):
        for config in ("full", "houlsby36_nodrop", "houlsby36_nodrop_gelu", "houlsby36_nodrop_head1x",
                       "houlsby36_nodrop_head30x"):
            runs.append(_run(config, "sst2", 1e-3, 0.85, 0.85, seed))
    (tmp_path / "r.json").write_text(json.dumps({"runs": runs}))
    import argparse

    svg = tmp_path / "one.svg"
    bench.cmd_seeds(
        argparse.Namespace(files=[str(tmp_path / "r.json")], baseline="full", svg=str(svg), out=None,
                           only_seeds=None, margin=0.5, tasks="sst2", split="report", same=None,
                           configs="full,houlsby36_nodrop,houlsby36_nodrop_gelu,houlsby36_nodrop_head1x,"
                           "houlsby36_nodrop_head30x")
    )
    text = svg.read_text()
    assert text.count("<circle") == 5 * 2  # SST-2 only: no CoLA panel, no empty mean panel, no pfeiffer
    assert "pfeiffer" not in text
    assert ">sst2</text>" in text and ">cola</text>" not in text and "mean of the three" not in text
    assert "stroke-dasharray" not in text  # the target's margin is about the three-task mean
    assert text.count("<text") - text.count('font-size="10"') == 2  # the title and one panel title
    with pytest.raises(SystemExit, match="no run is left"):  # a filter that keeps nothing says so
        bench.cmd_seeds(
            argparse.Namespace(files=[str(tmp_path / "r.json")], baseline="full", svg=str(svg), out=None,
                               only_seeds=None, margin=0.5, tasks="subj", configs=None,
                               split="report", same=None)
        )


def test_seeds_command_scores_the_selection_split_on_request(bench: ModuleType, tmp_path: Path) -> None:
    # SST-2 picks its lr on "select" and reports on "report": --split select scores the former
    runs = [_run(c, "sst2", 1e-3, sel, rep, seed)
            for seed in (43, 44) for c, sel, rep in (("full", 0.90, 0.87), ("houlsby", 0.87, 0.84))]
    runs += [_run(c, t, 1e-3, 0.80, 0.80, seed)
             for seed in (43, 44) for c in ("full", "houlsby") for t in ("cola", "subj")]
    (tmp_path / "r.json").write_text(json.dumps({"runs": runs}))
    import argparse

    def mean(split: str) -> dict[str, float]:
        out = tmp_path / f"{split}.json"
        bench.cmd_seeds(argparse.Namespace(files=[str(tmp_path / "r.json")], baseline="full", svg=None,
                                           out=str(out), only_seeds=None, margin=0.5, tasks=None,
                                           configs=None, split=split, same=None))
        return {c: v["mean_acc"] for c, v in json.loads(out.read_text()).items()}

    assert mean("report") == pytest.approx({"full": (87 + 160) / 3, "houlsby": (84 + 160) / 3})
    assert mean("select") == pytest.approx({"full": (90 + 160) / 3, "houlsby": (87 + 160) / 3})


def test_seeds_command_pools_a_screen_with_the_option_that_rebuilds_it(bench: ModuleType, tmp_path: Path) -> None:
    # seeds 43-44 ran as the bench screen, 45 as the registry option: --same counts them as one configuration
    runs = [_run("full", t, 1e-4, 0.8, 0.8, seed) for seed in (43, 44, 45) for t in bench.TASKS]
    runs += [_run("houlsby11_lora_ffn16", t, 1e-3, 0.79, 0.79, seed) for seed in (43, 44) for t in bench.TASKS]
    runs += [_run("houlsby11_ffnlora", t, 1e-3, 0.78, 0.78, 45) for t in bench.TASKS]
    (tmp_path / "r.json").write_text(json.dumps({"runs": runs}))
    import argparse

    def summary(same: str | None) -> dict[str, dict[str, object]]:
        out = tmp_path / "s.json"
        bench.cmd_seeds(argparse.Namespace(files=[str(tmp_path / "r.json")], baseline="full", svg=None,
                                           out=str(out), only_seeds=None, margin=0.5, tasks=None,
                                           configs=None, split="report", same=same))
        return dict(json.loads(out.read_text()))

    apart = summary(None)
    assert apart["houlsby11_lora_ffn16"]["seeds"] == [43, 44] and "diffs" not in apart["houlsby11_ffnlora"]
    pooled = summary("houlsby11_lora_ffn16=houlsby11_ffnlora")
    assert "houlsby11_lora_ffn16" not in pooled
    assert pooled["houlsby11_ffnlora"]["seeds"] == [43, 44, 45]
    assert pooled["houlsby11_ffnlora"]["diffs"] == pytest.approx([-1.0, -1.0, -2.0])
    # a seed held under both names is refused, not silently picked
    runs += [_run("houlsby11_ffnlora", t, 1e-3, 0.5, 0.5, 44) for t in bench.TASKS]
    (tmp_path / "r.json").write_text(json.dumps({"runs": runs}))
    with pytest.raises(SystemExit, match="seed 44 is there under both names"):
        summary("houlsby11_lora_ffn16=houlsby11_ffnlora")


def test_budget_command_keeps_budgets_apart_and_pairs_the_gap_move(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the same configuration names under two budgets; only the files' meta tells them apart
    gaps = {3: {43: -1.0, 44: -2.0, 45: -1.5}, 6: {43: -0.5, 44: -0.5, 45: 0.5}}
    for epochs, per_seed in gaps.items():
        runs = []
        for seed, gap in per_seed.items():
            runs.append(_run("full", "sst2", 1e-4, 0.9, 0.86, seed))
            runs.append(_run("houlsby36_nodrop", "sst2", 1e-3, 0.9, 0.86 + gap / 100, seed))
            # a worse lr on the selection split must not be the one kept
            runs.append(_run("houlsby36_nodrop", "sst2", 3e-3, 0.1, 0.99, seed))
        (tmp_path / f"e{epochs}.json").write_text(json.dumps({"meta": {"hp": {"epochs": epochs}}, "runs": runs}))
    import argparse

    out, svg = tmp_path / "b.json", tmp_path / "b.svg"
    files = [str(tmp_path / "e3.json"), str(tmp_path / "e6.json")]
    bench.cmd_budget(argparse.Namespace(files=files, baseline="full", svg=str(svg), out=str(out), margin=0.5))
    summary = json.loads(out.read_text())["houlsby36_nodrop"]["sst2"]
    for epochs, per_seed in gaps.items():
        d, lo, hi = bench.paired_interval(list(per_seed.values()))
        assert summary[str(epochs)]["gap"] == pytest.approx(d)
        assert summary[str(epochs)]["ci95"] == pytest.approx([lo, hi])
    moves = [gaps[6][s] - gaps[3][s] for s in (43, 44, 45)]
    assert summary["3->6"]["moves"] == pytest.approx(moves)
    assert summary["3->6"]["move"] == pytest.approx(sum(moves) / 3)
    assert "gap moves +1.33" in capsys.readouterr().out
    text = svg.read_text()
    assert text.startswith("<svg") and text.count("<circle") == 6 and "3 epochs" in text and "6 epochs" in text


def test_seed_table_refuses_two_budgets_of_one_configuration(bench: ModuleType, tmp_path: Path) -> None:
    for epochs in (3, 6):
        runs = [_run("houlsby", "sst2", 1e-3, 0.8, 0.8, 43)]
        (tmp_path / f"e{epochs}.json").write_text(json.dumps({"meta": {"hp": {"epochs": epochs}}, "runs": runs}))
    with pytest.raises(ValueError, match="3 and 6 epochs|6 and 3 epochs"):
        bench.seed_table([str(tmp_path / "e3.json"), str(tmp_path / "e6.json")])


def _sized(run: dict[str, object], trainable: int, total: int) -> dict[str, object]:
    return {**run, "trainable_params": trainable, "total_params": total}


def test_width_command_places_each_gap_at_its_share_and_pairs_by_seed(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    runs = []
    # full: sst2 0.86 / cola 0.71 every seed; houlsby_nodrop (1 %) 2 and 1 points below, seed-dependent;
    # houlsby96_nodrop (4 %) level on sst2, one point below on cola; seed 46 has sst2 only
    for seed, wobble in {43: 0.0, 44: 0.01, 45: -0.01}.items():
        for task, acc in (("sst2", 0.86), ("cola", 0.71)):
            runs.append(_sized(_run("full", task, 1e-4, acc, acc, seed), 100, 100))
            small = acc - (0.02 if task == "sst2" else 0.01) + wobble
            runs.append(_sized(_run("houlsby_nodrop", task, 1e-3, small, small, seed), 1, 100))
            wide = acc - (0.0 if task == "sst2" else 0.01)
            runs.append(_sized(_run("houlsby96_nodrop", task, 1e-3, wide, wide, seed), 4, 100))
    runs.append(_sized(_run("full", "sst2", 1e-4, 0.86, 0.86, 46), 100, 100))
    runs.append(_sized(_run("houlsby96_nodrop", "sst2", 1e-3, 0.80, 0.80, 46), 4, 100))
    (tmp_path / "r.json").write_text(json.dumps({"meta": {"hp": {"epochs": 3}}, "runs": runs}))
    svg, out = tmp_path / "w.svg", tmp_path / "w.json"
    args = argparse.Namespace(
        files=[str(tmp_path / "r.json")], baseline="full", configs=None, tasks="sst2,cola", only_seeds=None,
        svg=str(svg), out=str(out), margin=0.5, budget=0.015, split="report",
    )
    bench.cmd_width(args)
    summary = json.loads(out.read_text())
    assert summary["tasks"] == ["sst2", "cola"]
    small, wide = summary["configs"]["houlsby_nodrop"], summary["configs"]["houlsby96_nodrop"]
    assert small["share"] == pytest.approx(0.01) and wide["share"] == pytest.approx(0.04)
    assert small["tasks"]["sst2"]["gaps"] == pytest.approx({"43": -2.0, "44": -1.0, "45": -3.0})
    assert small["tasks"]["sst2"]["gap"] == pytest.approx(-2.0)
    assert small["mean"]["gap"] == pytest.approx(-1.5)  # (-2 + -1) / 2, paired per seed
    # seed 46 enters sst2 (-6) but not the mean, which needs both tasks
    assert wide["tasks"]["sst2"]["gaps"]["46"] == pytest.approx(-6.0)
    assert set(wide["mean"]["gaps"]) == {"43", "44", "45"}
    assert wide["mean"]["gap"] == pytest.approx(-0.5)
    text = svg.read_text()
    assert text.startswith("<svg") and "houlsby96_nodrop (4.00%)" in text and "mean of sst2 + cola" in text
    table = capsys.readouterr().out
    assert "| houlsby_nodrop | 1.00% |" in table and table.index("houlsby_nodrop |") < table.index("houlsby96_nodrop |")


def test_width_figure_gives_each_unlisted_configuration_its_own_colour(bench: ModuleType, tmp_path: Path) -> None:
    # two configurations without a fixed colour: before, both were drawn (dots, bars, legend) in the same green
    import re

    def entry(share: float, gap: float) -> dict[str, object]:
        cell = {"gaps": {"43": gap, "44": gap + 0.2}, "gap": gap + 0.1, "ci95": [gap - 1.0, gap + 1.2]}
        return {"share": share, "tasks": {"sst2": cell}, "mean": cell}

    summary = {
        "baseline": "full", "tasks": ["sst2"], "split": "report",
        "configs": {"hybrid_a": entry(0.0146, -0.4), "hybrid_b": entry(0.0143, -0.3), "houlsby": entry(0.01, -0.7)},
    }
    svg = tmp_path / "w.svg"
    bench._svg_width(summary, svg, 0.5, 0.015)
    text = svg.read_text()
    dots = re.findall(r'<circle [^>]*fill="(#[0-9a-f]{6})"[^>]*><title>(\S+), sst2, seed', text)
    assert len(dots) == 3 * 2
    colour = {c: {f for f, cc in dots if cc == c} for c in summary["configs"]}
    assert all(len(v) == 1 for v in colour.values())
    assert len({next(iter(v)) for v in colour.values()}) == 3
    assert colour["houlsby"] == {bench._COLOURS["houlsby"]}
    for c, (f,) in colour.items():  # the legend names each configuration in its dots' colour
        assert re.search(rf'fill="{f}">{c} \(', text)


def test_width_refuses_a_configuration_with_two_shares(bench: ModuleType, tmp_path: Path) -> None:
    runs = [
        _sized(_run("full", "sst2", 1e-4, 0.86, 0.86, 43), 100, 100),
        _sized(_run("houlsby_nodrop", "sst2", 1e-3, 0.85, 0.85, 43), 1, 100),
        _sized(_run("houlsby_nodrop", "cola", 1e-3, 0.70, 0.70, 43), 2, 100),
        _sized(_run("full", "cola", 1e-4, 0.71, 0.71, 43), 100, 100),
    ]
    (tmp_path / "r.json").write_text(json.dumps({"runs": runs}))
    import argparse

    args = argparse.Namespace(
        files=[str(tmp_path / "r.json")], baseline="full", configs=None, tasks=None, only_seeds=None, split="report"
    )
    with pytest.raises(ValueError, match="2 different trainable shares"):
        bench.width_table(args)


def test_errors_command_buckets_by_length_and_pairs_by_seed(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    # four rows: two short (3 words), two long (12 words); gold 1, 0, 1, 0
    texts = ["a b c", "d e f", " ".join(["w"] * 12), " ".join(["v"] * 12)]
    gold = ["1", "0", "1", "0"]
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "report.jsonl").write_text(
        "".join(json.dumps({"text": t, "label": g}) + "\n" for t, g in zip(texts, gold, strict=True))
    )

    def run(config: str, seed: int, p1: list[float]) -> dict[str, object]:
        return {**_run(config, "sst2", 1e-3, 0.5, 0.5, seed), "report_p1": p1}

    runs = [
        run("full", 1, [0.9, 0.1, 0.9, 0.1]),  # all right
        run("full", 2, [0.9, 0.1, 0.9, 0.9]),  # last (long) wrong
        run("houlsby", 1, [0.9, 0.1, 0.2, 0.1]),  # third (long) wrong
        run("houlsby", 2, [0.9, 0.9, 0.9, 0.9]),  # second (short) and last (long) wrong
        {"config": "houlsby", "task": "sst2", "lr": 3e-3, "seed": 3, "error": "boom"},
    ]
    (tmp_path / "r.json").write_text(json.dumps({"runs": runs}))
    out, svg = tmp_path / "e.json", tmp_path / "e.svg"
    bench.cmd_errors(argparse.Namespace(files=[str(tmp_path / "r.json")], carry=str(tmp_path), baseline="full",
                                        svg=str(svg), out=str(out)))
    s = json.loads(out.read_text())
    assert s["buckets"] == ["0-9", "10-14"] and s["bucket_rows"] == [2, 2]  # empty buckets left out
    full, h = s["configs"]["full"], s["configs"]["houlsby"]
    assert full["accuracy"] == pytest.approx(87.5) and h["accuracy"] == pytest.approx(62.5)
    assert full["bucket_accuracy"] == pytest.approx([100.0, 75.0])
    assert h["bucket_accuracy"] == pytest.approx([75.0, 50.0])
    short, long = h["bucket_gaps"]
    assert short["seeds"] == [[1, 0.0], [2, -50.0]] and short["mean"] == pytest.approx(-25.0)
    assert long["seeds"] == [[1, -50.0], [2, 0.0]]
    assert h["positive_rate"] == pytest.approx((1 / 4 + 4 / 4) / 2)
    assert h["errors"] == {"1": {"both": 0, "only_this": 1, "only_baseline": 0},
                           "2": {"both": 1, "only_this": 1, "only_baseline": 0}}
    assert "both wrong on 1, only houlsby on 1" in capsys.readouterr().out
    assert svg.read_text().count("<circle") == 2 * 2  # a dot per (bucket, seed)
    # runs of two tasks, or no baseline, are refused with a message
    runs.append({**run("full", 1, [0.5] * 4), "task": "cola"})
    (tmp_path / "r.json").write_text(json.dumps({"runs": runs}))
    with pytest.raises(SystemExit, match="one task"):
        bench.errors_table([str(tmp_path / "r.json")], tmp_path, "full")
    with pytest.raises(SystemExit, match="baseline"):
        (tmp_path / "r.json").write_text(json.dumps({"runs": runs[2:4]}))
        bench.errors_table([str(tmp_path / "r.json")], tmp_path, "full")


def _device_file(path: Path, device: str, gaps: dict[int, float], config: str = "houlsby11_ffnlora") -> str:
    # every task: full at 0.80, the configuration `gap` points off it (the same gap on each task)
    runs = [_run("full", t, 1e-4, 0.8, 0.8, s) for s in gaps for t in ("sst2", "cola", "subj")]
    runs += [_run(config, t, 1e-3, 0.8, 0.8 + g / 100, s) for s, g in gaps.items() for t in ("sst2", "cola", "subj")]
    path.write_text(json.dumps({"meta": {"device": device}, "runs": runs}))
    return str(path)


def test_seed_table_refuses_one_seed_drawn_on_two_devices(bench: ModuleType, tmp_path: Path) -> None:
    # the same seed on a GPU and a CPU is two dropout draws: never a grid to keep the better one of
    files = [_device_file(tmp_path / "g.json", "cuda", {43: -1.0}), _device_file(tmp_path / "c.json", "cpu", {43: 0.0})]
    with pytest.raises(SystemExit, match="seed 43 ran on (cuda and on cpu|cpu and on cuda)"):
        bench.seed_table(files)


def test_devices_command_pools_by_seed_and_averages_a_seeds_devices_first(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    gpu = _device_file(tmp_path / "g.json", "cuda", {43: -1.0, 44: 0.0, 46: -0.5})
    # the CPU's seeds ran under the screen's name, as bench/results/cpu-seeds did
    cpu = _device_file(tmp_path / "c.json", "cpu", {43: 0.0, 44: -2.0, 45: -1.0}, config="houlsby11_lora_ffn16")
    out, svg = tmp_path / "d.json", tmp_path / "d.svg"
    args = argparse.Namespace(files=[gpu, cpu], config="houlsby11_ffnlora", baseline="full",
                              same="houlsby11_lora_ffn16=houlsby11_ffnlora", only_seeds=None, split="report",
                              margin=0.5, svg=str(svg), out=str(out))
    bench.cmd_devices(args)
    s = json.loads(out.read_text())["scopes"]
    for scope in ("sst2", "cola", "subj", "mean"):
        assert s[scope]["cuda"]["gaps"] == pytest.approx({"43": -1.0, "44": 0.0, "46": -0.5})
        assert s[scope]["cpu"]["gaps"] == pytest.approx({"43": 0.0, "44": -2.0, "45": -1.0})
        # seeds 43 and 44 ran on both: one unit each, the mean of its two draws
        pooled = {"43": -0.5, "44": -1.0, "45": -1.0, "46": -0.5}
        assert s[scope]["pooled"]["gaps"] == pytest.approx(pooled)
        d, lo, hi = bench.paired_interval(list(pooled.values()))
        assert s[scope]["pooled"]["gap"] == pytest.approx(d) and s[scope]["pooled"]["ci95"] == pytest.approx([lo, hi])
        # the devices' gaps compared on the seeds both ran: 43: 0 - (-1), 44: -2 - 0
        diff = bench.paired_interval([1.0, -2.0])
        assert s[scope]["cpu - cuda"]["seeds"] == [43, 44]
        assert [s[scope]["cpu - cuda"]["gap"], *s[scope]["cpu - cuda"]["ci95"]] == pytest.approx(list(diff))
    text = capsys.readouterr().out
    assert "| mean | pooled | 4 |" in text and "(6 draws)" in text and "| mean | cpu − cuda | 2 |" in text
    svg_text = svg.read_text()
    # four panels x (3 + 3 + 4 seeds), a whisker per column, the margin dashed in the mean panel only
    assert svg_text.startswith("<svg") and svg_text.count("<circle") == 4 * 10
    assert svg_text.count(": 95 % interval ") == 4 * 3 and svg_text.count("stroke-dasharray") == 1
    with pytest.raises(SystemExit, match="every file ran on cuda"):
        bench.cmd_devices(argparse.Namespace(**{**vars(args), "files": [gpu]}))


def test_averages_command_pairs_each_average_with_the_last_weights_and_the_baseline(
    bench: ModuleType, tmp_path: Path
) -> None:
    runs = []
    # per seed: (full raw, full ema, houlsby raw, houlsby ema)
    for seed, (fr, fe, hr, he) in {43: (0.80, 0.81, 0.79, 0.81), 44: (0.82, 0.82, 0.80, 0.81)}.items():
        for task in bench.TASKS:
            for config, raw, ema in (("full", fr, fe), ("houlsby", hr, he)):
                r = _run(config, task, 1e-3, raw, raw, seed)
                r["averaged"] = {"ema0.99": {"select": {"accuracy": ema, "matthews_corr": ema},
                                             "report": {"accuracy": ema, "matthews_corr": ema}}}
                runs.append(r)
    runs.append(_run("houlsby", "sst2", 1e-3, 0.5, 0.5, 45))  # no averages: left out of every view
    (tmp_path / "r.json").write_text(json.dumps({"runs": runs}))
    import argparse

    out, svg = tmp_path / "a.json", tmp_path / "a.svg"
    bench.cmd_averages(argparse.Namespace(files=[str(tmp_path / "r.json")], baseline="full", configs=None, tasks=None,
                                          only_seeds=None, split="report", svg=str(svg), out=str(out), margin=0.5))
    s = json.loads(out.read_text())
    assert s["houlsby"]["raw"]["seeds"] == [43, 44]
    assert s["houlsby"]["raw"]["gaps"] == {"43": pytest.approx(-1.0), "44": pytest.approx(-2.0)}
    assert s["houlsby"]["ema0.99"]["gaps"] == {"43": pytest.approx(0.0), "44": pytest.approx(-1.0)}
    assert s["houlsby"]["ema0.99"]["vs_raw"] == pytest.approx(1.5)  # +2 and +1 against its own last weights
    assert s["full"]["ema0.99"]["vs_raw"] == pytest.approx(0.5)
    text = svg.read_text()
    assert text.count("<circle") == 4 * 2 * 2  # 4 panels x 2 views x 2 seeds
