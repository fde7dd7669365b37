"""Reading weight files without ever unpickling them.

Only safetensors are accepted. The header is parsed here with a size cap and a tensor-count cap
before any library touches the file, and pickle/zip files (``.bin``, ``.pt``, a pickle renamed
``.safetensors``) are refused outright: scanners for malicious pickles are bypassable, refusing is not.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from registry.errors import InvalidInput

MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_TENSORS = 20_000
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".h5")
_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def refuse_pickle_name(filename: str, *, field: str = "files") -> None:
    if filename.lower().endswith(PICKLE_SUFFIXES):
        raise InvalidInput(
            f"{filename}: pickle-based weight files are refused (they can run code when loaded); "
            "upload safetensors",
            field=field,
        )


def inspect_safetensors(path: Path, *, field: str = "files") -> dict[str, TensorInfo]:
    """Validate a safetensors file's header and return its tensors; never loads data."""
    name = path.name
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise InvalidInput(f"{name}: not a safetensors file (too short)", field=field)
        (header_len,) = struct.unpack("<Q", head)
        # A valid header may well begin with byte 0x80 (a header of 128 + 256k bytes), so a file
        # is called a pickle/zip only when it does not also read as safetensors ('{' after the length).
        looks_safetensors = header_len + 8 <= size and f.read(1) == b"{"
        f.seek(8)
        if not looks_safetensors and (head[:1] == b"\x80" or head[:2] == b"PK"):
            raise InvalidInput(
                f"{name}: this is a pickle/zip file, not safetensors; it is refused and was not read",
                field=field,
            )
        if header_len > MAX_HEADER_BYTES or header_len + 8 > size:
            raise InvalidInput(f"{name}: safetensors header size {header_len} is invalid or too large", field=field)
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{name}: safetensors header is not valid JSON", field=field) from exc
    if not isinstance(header, dict):
        raise InvalidInput(f"{name}: safetensors header is not an object", field=field)
    header.pop("__metadata__", None)
    if len(header) > MAX_TENSORS:
        raise InvalidInput(f"{name}: more than {MAX_TENSORS} tensors", field=field)
    data_len = size - 8 - header_len
    out: dict[str, TensorInfo] = {}
    for tname, info in header.items():
        try:
            if not isinstance(info["shape"], list) or not isinstance(info["data_offsets"], list):
                raise TypeError("shape and data_offsets must be lists")
            dtype = str(info["dtype"])
            shape = tuple(int(d) for d in info["shape"])
            start, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"{name}: tensor {tname!r} has a malformed header entry", field=field) from exc
        if dtype not in _DTYPE_BYTES or any(d < 0 for d in shape):
            raise InvalidInput(f"{name}: tensor {tname!r} has unsupported dtype or shape", field=field)
        if not (0 <= start <= end <= data_len) or end - start != math.prod(shape) * _DTYPE_BYTES[dtype]:
            raise InvalidInput(f"{name}: tensor {tname!r} has offsets outside the file", field=field)
        out[tname] = TensorInfo(dtype, shape)
    return out
