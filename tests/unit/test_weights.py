"""registry.weights: safetensors headers parsed with caps; pickles refused and never deserialised."""

from __future__ import annotations

import json
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest

from registry.errors import InvalidInput
from registry.weights import MAX_HEADER_BYTES, MAX_TENSORS, inspect_safetensors, refuse_pickle_name


def write(path: Path, header: dict[str, Any], data: bytes = b"") -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


class Boom:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (self.marker,))


def test_valid_file(tmp_path: Path) -> None:
    p = write(tmp_path / "m.safetensors", {"__metadata__": {"format": "pt"},
                                           "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                                           "b": {"dtype": "BF16", "shape": [3], "data_offsets": [16, 22]}},
              b"\0" * 22)
    info = inspect_safetensors(p)
    assert info["w"].shape == (2, 2) and info["w"].numel == 4 and info["b"].dtype == "BF16"


def test_matches_the_safetensors_library(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    p = tmp_path / "real.safetensors"
    save_file({"a": torch.zeros(3, 5), "b": torch.ones(7, dtype=torch.int64)}, str(p))
    info = inspect_safetensors(p)
    assert {k: (v.dtype, v.shape) for k, v in info.items()} == {"a": ("F32", (3, 5)), "b": ("I64", (7,))}


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "x.pth", "a.pkl", "b.ckpt", "MODEL.BIN",
                                  "w.pickle", "w.joblib", "w.npy", "w.h5"])
def test_pickle_names_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match="pickle"):
        refuse_pickle_name(name)


def test_safe_names_pass() -> None:
    for name in ("model.safetensors", "adapter_model.safetensors", "config.json", "vocab.txt"):
        refuse_pickle_name(name)


def test_pickle_renamed_safetensors_is_refused_unread(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    p = tmp_path / "model.safetensors"
    p.write_bytes(pickle.dumps({"w": Boom(marker)}, protocol=2))
    with pytest.raises(InvalidInput, match="pickle"):
        inspect_safetensors(p)
    p.write_bytes(pickle.dumps({"w": Boom(marker)}, protocol=5))
    with pytest.raises(InvalidInput):
        inspect_safetensors(p)
    assert not marker.exists()


def test_torch_zip_checkpoint_renamed_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "model.safetensors"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": 1}))
    with pytest.raises(InvalidInput, match="pickle/zip"):
        inspect_safetensors(p)


@pytest.mark.parametrize("header_len", [MAX_HEADER_BYTES + 1, 2**63, 10**6])
def test_header_size_capped_and_checked(tmp_path: Path, header_len: int) -> None:
    p = tmp_path / "m.safetensors"
    p.write_bytes(struct.pack("<Q", header_len) + b"{}")
    with pytest.raises(InvalidInput, match="header size"):
        inspect_safetensors(p)


def test_tensor_count_capped(tmp_path: Path) -> None:
    header = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(MAX_TENSORS + 1)}
    with pytest.raises(InvalidInput, match="tensors"):
        inspect_safetensors(write(tmp_path / "m.safetensors", header))


@pytest.mark.parametrize("entry", [
    {"dtype": "F32", "shape": [4], "data_offsets": [0, 32]},  # past the end
    {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]},  # size disagrees with shape
    {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]},
    {"dtype": "OBJ", "shape": [1], "data_offsets": [0, 1]},
    {"dtype": "F32", "shape": "4", "data_offsets": [0, 16]},
    {"dtype": "F32", "shape": [4]},
    {"dtype": "F32", "shape": [4], "data_offsets": [8, 0]},
    "not an object",
])
def test_malformed_entries(tmp_path: Path, entry: Any) -> None:
    with pytest.raises(InvalidInput):
        inspect_safetensors(write(tmp_path / "m.safetensors", {"w": entry}, b"\0" * 16))


@pytest.mark.parametrize("raw", [b"", b"\x01\x02", struct.pack("<Q", 4) + b"\xff\xfe{}", struct.pack("<Q", 2) + b"[]",
                                 struct.pack("<Q", 5) + b"nope!"])
def test_garbage(tmp_path: Path, raw: bytes) -> None:
    p = tmp_path / "m.safetensors"
    p.write_bytes(raw)
    with pytest.raises(InvalidInput):
        inspect_safetensors(p)
