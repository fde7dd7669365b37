"""Bad input of every kind gets a 4xx problem+json naming the problem, before anything is stored or
queued: names, upload sizes (413 while streaming, on the real uvicorn server), page sizes, datasets,
hyper-parameters, weight files (pickles refused and never deserialised)."""

from __future__ import annotations

import json
import pickle
import socket
import struct
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from tests.integration.test_reliability import FAST_HP, api, setup_task

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BAD_NAMES = ["..", "../etc", "a/b", "a\\b", "．．／etc", "a\x00b", "a\nb", "a\x7fb", "x" * 65, "Upper", "-lead",
             "trail-", "a..b", "", " ", "naïve", "ｓｅｎｔ", "a b", "%2e%2e"]


def problem(r: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = dict(r.json())
    assert body["status"] == status and body["title"] and "type" in body
    if field is not None:
        assert body.get("field") == field, body
    return body


@pytest.fixture
def world(stack_factory: Any, tiny_bert: Path, tmp_path: Path) -> tuple[Any, TestClient, int]:
    st = stack_factory(max_line_bytes=2000, max_page_size=5)
    client = api(st)
    ds = setup_task(client, tiny_bert, tmp_path)
    return st, client, ds


def _blob_count(st: Any) -> int:
    from registry.storage import get_store

    return sum(1 for _ in get_store(st.settings).list_keys("blobs/"))


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_422(world: Any, name: str) -> None:
    st, client, _ = world
    problem(client.post("/api/tasks", json={"name": name}), 422, "name")
    problem(client.post("/api/tasks", json={"name": "ok", "tags": [name]}), 422, "tags")
    r = client.put(f"/api/tasks/sent/aliases/{quote(name, safe='')}", json={"version": 1})
    assert r.status_code in (404, 405, 422), (name, r.status_code)  # a "/" inside makes it another route
    problem(r, r.status_code)
    problem(client.post("/api/base-models", data={"name": name},
                        files=[("files", ("config.json", b"{}"))]), 422)
    assert client.get("/api/tasks").json()["items"][0]["name"] == "sent"
    assert len(client.get("/api/tasks").json()["items"]) == 1


def test_names_in_paths_and_queries(world: Any) -> None:
    _, client, _ = world
    for path in ("/api/tasks/Upper", "/api/tasks/" + "x" * 65, "/api/tasks/a%00b", "/api/tasks/%EF%BC%8E%EF%BC%8E",
                 "/api/base-models/..%5C..", "/api/jobs?task=..%2f..", "/api/versions?base_model=A%0AB"):
        r = client.get(path)
        assert r.status_code in (404, 422), (path, r.status_code)
        problem(r, r.status_code)
    problem(client.get("/api/tasks/Upper"), 422, "task")
    r = client.get("/api/blobs/" + "../" * 3 + "etc/passwd")
    assert r.status_code in (404, 422)
    problem(client.get("/api/blobs/" + "A" * 64), 422, "sha256")
    problem(client.get("/api/blobs/" + "0" * 64), 404, "sha256")


def test_no_request_field_names_a_storage_key(world: Any) -> None:
    """The server builds every storage key from a sha256; no request body, form or query names one."""
    _, client, _ = world
    spec = client.get("/openapi.json").json()
    words: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "properties" and isinstance(v, dict):
                    words.extend(v)
                if k == "parameters" and isinstance(v, list):
                    words.extend(p["name"] for p in v if isinstance(p, dict) and "name" in p)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec["paths"])
    walk(spec.get("components", {}))
    request_words = {w.lower() for w in words}
    assert not request_words & {"key", "storage_key", "path", "s3_key", "object_key", "location", "url_path"}
    extra = client.post("/api/tasks", json={"name": "t2", "key": "blobs/../../x"})
    problem(extra, 422)  # unknown fields are refused, not ignored


def test_page_sizes_are_capped(world: Any) -> None:
    _, client, _ = world
    for i in range(7):
        assert client.post("/api/tasks", json={"name": f"t{i}"}).status_code == 201
    page = client.get("/api/tasks", params={"limit": 100000}).json()
    assert len(page["items"]) == 5 and page["next_cursor"]
    problem(client.get("/api/tasks", params={"limit": 0}), 422, "limit")
    problem(client.get("/api/tasks", params={"limit": "lots"}), 422, "limit")
    r = client.get("/api/tasks", params={"cursor": "!!not-a-cursor"})
    problem(r, 422, "cursor")


DATASETS: list[tuple[str, bytes, dict[str, Any], str]] = [
    ("missing column", b"txt\tlabel\nhi\tpos\n", {"text": "text", "label": "label"}, "mapping.text"),
    ("missing label col", b"text\nhi\n", {"text": "text", "label": "label"}, "mapping.label"),
    ("empty value", b"text\tlabel\nhi\t\n", {"text": "text", "label": "label"}, "mapping.label"),
    ("empty file", b"", {"text": "text", "label": "label"}, "train"),
    ("header only", b"text\tlabel\n", {"text": "text", "label": "label"}, "train"),
    ("not utf-8", b"text\tlabel\ncaf\xe9\tpos\n", {"text": "text", "label": "label"}, "train"),
    ("unknown label", b"text\tlabel\nhi\tmaybe\n", {"text": "text", "label": "label"}, "mapping.label"),
    ("huge line", b"text\tlabel\n" + b"a" * 5000 + b"\tpos\n", {"text": "text", "label": "label"}, "train"),
    ("bad mapping", b"text\tlabel\nhi\tpos\n", {"label": "label"}, "mapping"),
    ("unknown mapping key", b"text\tlabel\nhi\tpos\n", {"text": "text", "label": "label", "x": 1}, "mapping"),
    ("binary", b"\x00\x01\x02\xff\xfe" * 100, {"text": "text", "label": "label"}, "train"),
]


@pytest.mark.parametrize("case", DATASETS, ids=[c[0] for c in DATASETS])
def test_bad_datasets_are_422_before_anything_is_stored(world: Any, case: tuple[str, bytes, dict[str, Any], str]
                                                        ) -> None:
    st, client, _ = world
    _, data, mapping, field = case
    blobs = _blob_count(st)
    r = client.post("/api/tasks/sent/datasets", data={"mapping": json.dumps(mapping)},
                    files={"train": ("train.tsv", data)})
    body = problem(r, 422, field)
    assert body["detail"]
    assert _blob_count(st) == blobs
    assert len(client.get("/api/tasks/sent/datasets").json()["items"]) == 1


def test_jsonl_and_dev_split_problems(world: Any) -> None:
    _, client, _ = world
    for data, field in ((b'{"text": "hi", "label": "pos"}\nnot json\n', "train"),
                        (b'["a list"]\n', "train"), (b'{"text": 5, "label": "pos"}\n', "mapping.text")):
        r = client.post("/api/tasks/sent/datasets", data={"mapping": '{"text": "text", "label": "label"}'},
                        files={"train": ("t.jsonl", data)})
        problem(r, 422, field)
    r = client.post("/api/tasks/sent/datasets", data={"mapping": '{"text": "text", "label": "label"}'},
                    files={"train": ("t.tsv", b"text\tlabel\nhi\tpos\n"), "dev": ("d.tsv", b"text\tlabel\nx\tmeh\n")})
    problem(r, 422, "mapping.label")
    r = client.post("/api/tasks/sent/datasets", data={"mapping": '{"text": "text", "label": "label"}'},
                    files={"train": ("t.parquet", b"PAR1")})
    problem(r, 422, "format")


BAD_HP: list[tuple[str, str]] = [
    ('{"learning_rate": NaN}', "hyperparameters.learning_rate"),
    ('{"learning_rate": Infinity}', "hyperparameters.learning_rate"),
    ('{"learning_rate": 1e999}', "hyperparameters.learning_rate"),
    ('{"learning_rate": -0.001}', "hyperparameters.learning_rate"),
    ('{"learning_rate": 0}', "hyperparameters.learning_rate"),
    ('{"epochs": 0}', "hyperparameters.epochs"),
    ('{"epochs": -Infinity}', "hyperparameters.epochs"),
    ('{"batch_size": 0}', "hyperparameters.batch_size"),
    ('{"batch_size": -8}', "hyperparameters.batch_size"),
    ('{"max_length": 0}', "hyperparameters.max_length"),
    ('{"max_steps": 0}', "hyperparameters.max_steps"),
    ('{"warmup_ratio": NaN}', "hyperparameters.warmup_ratio"),
    ('{"weight_decay": -1}', "hyperparameters.weight_decay"),
    ('{"up_lr_ratio": 0}', "hyperparameters.up_lr_ratio"),
    ('{"up_lr_ratio": NaN}', "hyperparameters.up_lr_ratio"),
    ('{"seed": -1}', "hyperparameters.seed"),
    ('{"eval_every": 0}', "hyperparameters.eval_every"),
    ('{"surprise": 1}', "hyperparameters.surprise"),
    ('{"batch_size": 1.5}', "hyperparameters.batch_size"),
]


@pytest.mark.parametrize("hp,field", BAD_HP, ids=[h for h, _ in BAD_HP])
def test_bad_hyperparameters_are_422_and_nothing_is_queued(world: Any, hp: str, field: str) -> None:
    _, client, ds = world
    raw = f'{{"task": "sent", "base_model": "tiny-bert", "dataset_id": {ds}, "hyperparameters": {hp}}}'
    r = client.post("/api/jobs", content=raw, headers={"content-type": "application/json"})
    problem(r, 422, field)
    assert client.get("/api/jobs").json()["items"] == []


def test_bad_job_fields(world: Any) -> None:
    _, client, ds = world
    base = {"task": "sent", "base_model": "tiny-bert", "dataset_id": ds, "hyperparameters": FAST_HP}
    problem(client.post("/api/jobs", json={**base, "method": "nope"}), 422, "method")
    problem(client.post("/api/jobs", json={**base, "method_config": {"reduction_factor": -1}}), 422)
    for cfg in ('{"lora_alpha": NaN}', '{"lora_dropout": Infinity}', '{"r": 0}'):
        raw = (f'{{"task": "sent", "base_model": "tiny-bert", "dataset_id": {ds}, "method": "lora", '
               f'"method_config": {cfg}}}')
        body = problem(client.post("/api/jobs", content=raw, headers={"content-type": "application/json"}), 422)
        assert body["field"].startswith("method_config."), body
    problem(client.post("/api/jobs", json={**base, "dataset_id": 0}), 422, "dataset_id")
    problem(client.post("/api/jobs", json={**base, "dataset_id": 999}), 404, "dataset_id")
    problem(client.post("/api/jobs", json={**base, "parent_version": 3}), 422, "parent_version")
    problem(client.post("/api/jobs", content=b"{not json", headers={"content-type": "application/json"}), 422)
    assert client.get("/api/jobs").json()["items"] == []


def _safetensors(header: dict[str, Any], data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


class _Boom:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (Path(self.marker),))


def test_pickled_weights_are_refused_and_never_deserialised(world: Any, tiny_bert: Path, tmp_path: Path) -> None:
    _, client, _ = world
    marker = tmp_path / "unpickled"
    payload = pickle.dumps({"weight": _Boom(str(marker))})
    config = (tiny_bert / "config.json").read_bytes()
    cases = {
        "pytorch_model.bin": payload,
        "model.pt": payload,
        "model.safetensors": payload,  # a pickle renamed .safetensors
    }
    for fname, data in cases.items():
        r = client.post("/api/base-models", data={"name": "evil"},
                        files=[("files", ("config.json", config)), ("files", (fname, data))])
        body = problem(r, 422, "files")
        assert "pickle" in body["detail"] or "safetensors" in body["detail"], body
    zipped = b"PK\x03\x04" + payload
    r = client.post("/api/base-models", data={"name": "evil"},
                    files=[("files", ("config.json", config)), ("files", ("model.safetensors", zipped))])
    problem(r, 422, "files")
    huge = struct.pack("<Q", 2**40) + b"{}"
    r = client.post("/api/base-models", data={"name": "evil"},
                    files=[("files", ("config.json", config)), ("files", ("model.safetensors", huge))])
    assert "header" in problem(r, 422, "files")["detail"]
    many = _safetensors({f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(20_001)})
    r = client.post("/api/base-models", data={"name": "evil"},
                    files=[("files", ("config.json", config)), ("files", ("model.safetensors", many))])
    assert "tensors" in problem(r, 422, "files")["detail"]
    outside = _safetensors({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8)
    r = client.post("/api/base-models", data={"name": "evil"},
                    files=[("files", ("config.json", config)), ("files", ("model.safetensors", outside))])
    problem(r, 422, "files")
    assert not marker.exists()  # nothing was ever unpickled
    assert client.get("/api/base-models/evil").status_code == 404


def test_problem_json_for_framework_errors(world: Any) -> None:
    _, client, _ = world
    problem(client.get("/api/nope"), 404)
    problem(client.delete("/api/tasks"), 405)
    problem(client.get("/api/jobs/not-a-number"), 422, "job_id")
    problem(client.post("/api/tasks", content=b"[]", headers={"content-type": "application/json"}), 422)


def _raw_http(url: str, head: bytes, body: bytes = b"") -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + body)
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_upload_limits_are_enforced_while_streaming(stack_factory: Any) -> None:
    """On the real server: a declared Content-Length over the limit gets 413 without a byte of the
    body sent; a chunked body is cut off with 413 once it passes the limit; JSON bodies have 1 MiB."""
    import httpx

    st = stack_factory(max_upload_bytes=200_000, max_dataset_bytes=100_000)
    url = st.start_api()
    head = (f"POST /api/tasks/sent/datasets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {st.token}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 180000\r\n\r\n").encode()
    reply = _raw_http(url, head)  # under the upload limit, over the dataset limit: refused up front
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    head = (f"POST /api/base-models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {st.token}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 10000000000\r\n\r\n").encode()
    reply = _raw_http(url, head)  # the body is never sent
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"application/problem+json" in reply

    def chunks() -> Any:
        yield b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"model.safetensors\"\r\n\r\n"
        for _ in range(100):
            yield b"\0" * 65536

    r = httpx.post(url + "/api/base-models", content=chunks(), timeout=30,
                   headers={"Authorization": f"Bearer {st.token}", "Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and r.headers["content-type"].startswith("application/problem+json")
    big = json.dumps({"name": "t", "description": "x" * (1024 * 1024 + 10)})
    r = httpx.post(url + "/api/tasks", content=big, headers={"Authorization": f"Bearer {st.token}",
                                                              "Content-Type": "application/json"})
    assert r.status_code == 413
    assert httpx.get(url + "/healthz").status_code == 200  # the server is fine
