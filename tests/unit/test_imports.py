"""Import validation without torch in the checker: real artifacts of every method fit their base
model; altered ones are refused; pickles are refused by their bytes; cursors and headers edge cases."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from registry.errors import InvalidInput
from registry.models import BaseModel, Task
from registry.pagination import decode_cursor, encode_cursor
from registry.versions.imports import _method_from_config, check_file_names, check_shapes
from registry.weights import TensorInfo, inspect_safetensors
from tests.fixtures.adapters import peft_lora_dir, pickle_bytes
from tests.unit.conftest import make_tiny_model

METHODS = ("lora", "ia3", "houlsby", "pfeiffer", "parallel", "scaled_parallel", "prefix_tuning", "mam")


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bases")
    return {a: make_tiny_model(a, root / a) for a in ("bert", "gpt2")}


def _rows(arch: str, base_dir: Path) -> tuple[BaseModel, Task, dict[str, tuple[int, ...]]]:
    cfg = json.loads((base_dir / "config.json").read_text())
    hidden = cfg.get("hidden_size") or cfg.get("n_embd")
    layers = cfg.get("num_hidden_layers") or cfg.get("n_layer")
    causal = arch == "gpt2"
    bm = BaseModel(name=f"tiny-{arch}", hidden_size=hidden, num_layers=layers, num_parameters=1,
                   task_types=["causal_lm"] if causal else ["single_label"], weights_sha256="0" * 64)
    task = Task(name="t", type="causal_lm" if causal else "single_label", labels=[] if causal else ["a", "b"])
    base = {k: v.shape for k, v in inspect_safetensors(base_dir / "model.safetensors").items()}
    return bm, task, base


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
@pytest.mark.parametrize("method", METHODS)
def test_real_artifacts_fit_their_base(arch: str, method: str, bases: dict[str, Path], tmp_path: Path) -> None:
    from registry.methods.model import build_adapted_model

    bm, task, base = _rows(arch, bases[arch])
    model = build_adapted_model(bases[arch], task_type=task.type, labels=list(task.labels), method=method,
                                method_config={}, base_sha256="0" * 64, base_name=bm.name)
    model.save(tmp_path, metadata={})
    adapter = inspect_safetensors(tmp_path / "adapter_model.safetensors")
    head = inspect_safetensors(tmp_path / "head.safetensors") if (tmp_path / "head.safetensors").exists() else None
    check_shapes(adapter, head, bm=bm, task=task, base=base)
    got_method, _, meta = _method_from_config(json.loads((tmp_path / "adapter_config.json").read_text()))
    assert got_method == method and meta is not None
    # the same adapter on a base with a different hidden size is refused
    # (prefix tuning's only tensor is a flat embedding: its width is checked against 2 x layers)
    small = BaseModel(name="other", hidden_size=bm.hidden_size * 2, num_layers=bm.num_layers, num_parameters=1,
                      task_types=bm.task_types, weights_sha256="1" * 64)
    with pytest.raises(InvalidInput):
        check_shapes(adapter, head, bm=small, task=task, base={k: tuple(2 * d for d in s) for k, s in base.items()})


def _info(d: Path) -> tuple[dict[str, TensorInfo], dict[str, TensorInfo]]:
    return inspect_safetensors(d / "adapter_model.safetensors"), inspect_safetensors(d / "head.safetensors")


def test_lora_shape_refusals(bases: dict[str, Path], tmp_path: Path) -> None:
    bm, task, base = _rows("bert", bases["bert"])
    check_shapes(*_info(peft_lora_dir(tmp_path / "ok")), bm=bm, task=task, base=base)
    cases: dict[str, dict[str, Any]] = {
        "in_dim": {"in_dim": 48}, "layers": {"layers": 3}, "target": {"targets": ("nonexistent",)},
        "labels": {"labels": 3},
    }
    for name, kw in cases.items():
        with pytest.raises(InvalidInput) as exc:
            check_shapes(*_info(peft_lora_dir(tmp_path / name, **kw)), bm=bm, task=task, base=base)
        assert exc.value.field == "files", name
    # rank mismatch between A and B
    d = peft_lora_dir(tmp_path / "rank")
    t = {k: np.zeros(v.shape, np.float32) for k, v in inspect_safetensors(d / "adapter_model.safetensors").items()}
    first_b = next(k for k in t if k.endswith("lora_B.weight"))
    t[first_b] = np.zeros((32, 4), np.float32)
    save_file(t, str(d / "adapter_model.safetensors"))
    with pytest.raises(InvalidInput, match="rank"):
        check_shapes(*_info(d), bm=bm, task=task, base=base)
    # a classification task needs its head
    with pytest.raises(InvalidInput, match="head"):
        check_shapes(_info(tmp_path / "ok")[0], None, bm=bm, task=task, base=base)


def test_pickles_refused_by_name_and_by_bytes(tmp_path: Path) -> None:
    for bad in (["adapter_config.json", "adapter_model.bin"], ["adapter_config.json", "model.pt"],
                ["adapter_config.json"], ["adapter_model.safetensors"], ["x.json", "adapter_config.json",
                                                                         "adapter_model.safetensors"]):
        with pytest.raises(InvalidInput):
            check_file_names(bad)
    check_file_names(["adapter_config.json", "adapter_model.safetensors", "head.safetensors"])
    p = tmp_path / "adapter_model.safetensors"
    p.write_bytes(pickle_bytes())
    with pytest.raises(InvalidInput, match="pickle"):
        inspect_safetensors(p)


def test_safetensors_with_0x80_header_length_is_not_a_pickle(tmp_path: Path) -> None:
    """A legitimate header of 128 (+ 256k) bytes starts with byte 0x80, like a pickle."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    header += b" " * (128 - len(header))
    p = tmp_path / "a.safetensors"
    p.write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0\0\0")
    assert p.read_bytes()[0] == 0x80
    assert inspect_safetensors(p)["w"].shape == (1,)


def test_cursor_round_trip_and_garbage() -> None:
    assert decode_cursor(encode_cursor([3, 7])) == [3, 7]
    for bad in ("", "!!", "e30", "W10", "WzEsMiwzXQ", "bnVsbA"):
        with pytest.raises(InvalidInput):
            decode_cursor(bad)
