"""The whole path on real parts: API (uvicorn) + a real `celery worker` process + database + store.

Embedded default: SQLite + local artifact dir + kombu filesystem broker.
Production: PostgreSQL + Redis + an S3 protocol server (moto, its own process).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.stack import ROOT, TINY_DEV, TINY_TRAIN, Stack

pytestmark = pytest.mark.integration

CONFIGS = {
    "embedded": {"db": "sqlite", "store": "local", "broker": "filesystem"},
    "production": {"db": "postgres", "store": "s3", "broker": "redis"},
}
FAST_HP = {"epochs": 8, "batch_size": 8, "learning_rate": 5e-3, "max_length": 32, "seed": 1}


def _stack(stack_factory: Any, request: Any, kind: str) -> Stack:
    cfg = dict(CONFIGS[kind])
    if cfg["store"] == "s3":
        cfg["s3"] = request.getfixturevalue("s3_server")
    return stack_factory(**cfg)


def _setup_task(client: Any, tmp: Path, base_dir: Path, task: str = "sent", base: str = "tiny-bert") -> int:
    if not any(b["name"] == base for b in client.get("/api/base-models")["items"]):
        client.register_base_model(base, base_dir)
    client.create_task(task, type="single_label", labels=["neg", "pos"])
    (tmp / "train.tsv").write_text(TINY_TRAIN)
    (tmp / "dev.tsv").write_text(TINY_DEV)
    ds = client.upload_dataset(task, tmp / "train.tsv", dev=tmp / "dev.tsv",
                               mapping={"text": "text", "label": "label", "has_header": True})
    return int(ds["id"])


def _train(client: Any, task: str, dataset_id: int, *, base: str = "tiny-bert", **kw: Any) -> dict[str, Any]:
    job = client.submit(task, base_model=base, dataset_id=dataset_id, hyperparameters=FAST_HP, **kw)
    assert job["state"] == "queued"
    seen: set[str] = set()
    progress_seen: list[dict[str, Any]] = []

    def update(j: dict[str, Any]) -> None:
        seen.add(j["state"])
        if j["state"] == "running" and j["progress"].get("step"):
            progress_seen.append(j["progress"])

    final: dict[str, Any] = client.wait(job["id"], timeout=240, poll=0.3, on_update=update)
    assert final["state"] == "succeeded", final
    final["_states_seen"] = seen
    final["_progress_seen"] = progress_seen
    return final


@pytest.mark.parametrize("kind", ["embedded", "production"])
def test_register_train_pull_by_task_name(kind: str, stack_factory: Any, request: Any, tiny_bert: Path,
                                          tmp_path: Path) -> None:
    st = _stack(stack_factory, request, kind)
    st.start_api()
    st.start_worker()
    client = st.client()
    ds_id = _setup_task(client, tmp_path, tiny_bert)

    bm = client.get("/api/base-models/tiny-bert")
    assert bm["architecture"] == "BertModel" and bm["num_layers"] == 2 and bm["hidden_size"] == 32
    assert bm["num_parameters"] > 10_000 and len(bm["weights_sha256"]) == 64

    job = _train(client, "sent", ds_id)
    assert job["version"] == 1 and job["attempts"] == 1
    assert job["progress"]["step"] == job["progress"]["total_steps"] > 0
    assert len(job["progress"]["history"]) >= 1

    v = client.get("/api/tasks/sent/versions/1")
    assert v["method"] == "houlsby" and v["origin"] == "trained"
    assert 0 < v["trainable_share"] < 1 and v["trainable_params"] > 0
    assert {f["name"] for f in v["files"]} >= {"adapter_config.json", "adapter_model.safetensors"}
    assert v["size_bytes"] == sum(f["size"] for f in v["files"])
    assert "accuracy" in v["metrics"]
    assert v["base_model_sha256"] == bm["weights_sha256"]
    assert v["dataset_id"] == ds_id and v["dataset_sha256"] and v["job_id"] == job["id"] and v["code_version"]
    lineage = client.lineage("sent", 1)
    assert lineage["base_model"]["sha256"] == bm["weights_sha256"] and lineage["dataset"]["id"] == ds_id

    # Pull by task name in a fresh process, verify, load and predict.
    cache = tmp_path / "fresh-cache"
    code = (
        "import json,sys; from registry.client import RegistryClient;"
        f"c=RegistryClient({st.api_url!r}, token={st.token!r}, cache_dir={str(cache)!r});"
        "p=c.pull('sent'); m=c.load('sent');"
        "print(json.dumps({'path': str(p), 'pred': m.predict(['good fun great', 'bad boring awful'])}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=st.env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted(p.name for p in Path(result["path"]).iterdir()) == sorted(f["name"] for f in v["files"])
    assert result["pred"] == ["pos", "neg"]

    # CLI pull, and plain HTTP: manifest + file with integrity headers.
    cli = subprocess.run([sys.executable, "-m", "registry.cli", "pull", "sent", "--url", st.api_url, "--token",
                          st.token], cwd=ROOT, env={**st.env, "ADAPTER_REGISTRY_CACHE": str(tmp_path / "cli")},
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert Path(cli.stdout.strip().splitlines()[-1]).is_dir()
    manifest = httpx.get(f"{st.api_url}/api/tasks/sent/adapter").json()
    assert manifest["version"] == 1 and manifest["base_model"]["sha256"] == bm["weights_sha256"]
    f = manifest["files"][0]
    r = httpx.get(st.api_url + f["url"], follow_redirects=True)
    assert r.status_code == 200
    import hashlib

    assert hashlib.sha256(r.content).hexdigest() == f["sha256"]


def _logits(model: Any, texts: list[str]) -> Any:
    import torch

    with torch.no_grad():
        enc = model.tokenize(texts)
        return model(**enc).clone()


def test_training_never_touches_base_or_existing_adapters(stack_factory: Any, s3_server: Any, tiny_bert: Path,
                                                          tmp_path: Path) -> None:
    """Train A v1; record its bytes and logits; train B and A v2; A v1 and the base are bit-identical."""
    import torch

    from registry.hashing import sha256_bytes
    from registry.methods.model import load_adapted_model
    from registry.storage import get_store
    from registry.storage.keys import blob_key

    st = stack_factory(db="postgres", store="s3", broker="redis", s3=s3_server)
    st.start_api()
    st.start_worker()
    client = st.client()
    (tmp_path / "a").mkdir()
    ds_a = _setup_task(client, tmp_path / "a", tiny_bert, task="task-a")
    store = get_store(st.settings)
    bm = client.get("/api/base-models/tiny-bert")

    def snapshot(files: list[dict[str, Any]]) -> dict[str, bytes]:
        out = {}
        for f in files:
            with store.open(blob_key(f["sha256"])) as fh:
                out[f["name"]] = fh.read()
        return out

    base_before = snapshot(bm["files"])
    _train(client, "task-a", ds_a)
    v1 = client.get("/api/tasks/task-a/versions/1")
    a1_bytes = snapshot(v1["files"])
    inputs = ["good fun", "bad boring film", "a great movie"]
    a1_dir = client.pull("task-a", version=1)
    base_dir = client.pull_base_model("tiny-bert")
    logits_before = _logits(load_adapted_model(base_dir, a1_dir, base_sha256=bm["weights_sha256"]), inputs)

    (tmp_path / "b").mkdir()
    ds_b = _setup_task(client, tmp_path / "b", tiny_bert, task="task-b")
    _train(client, "task-b", ds_b)
    _train(client, "task-a", ds_a, parent_version=1)  # a second version of A, warm-started from v1

    v1_after = client.get("/api/tasks/task-a/versions/1")
    assert v1_after["files"] == v1["files"]
    assert snapshot(v1_after["files"]) == a1_bytes
    for f in v1["files"]:
        assert sha256_bytes(a1_bytes[f["name"]]) == f["sha256"]
    assert snapshot(bm["files"]) == base_before
    assert client.get("/api/base-models/tiny-bert")["weights_sha256"] == bm["weights_sha256"]
    fresh = tmp_path / "fresh"
    from registry.client import RegistryClient

    c2 = RegistryClient(st.api_url, token=st.token, cache_dir=fresh)
    a1_again = load_adapted_model(c2.pull_base_model("tiny-bert"), c2.pull("task-a", version=1),
                                  base_sha256=bm["weights_sha256"])
    assert torch.equal(_logits(a1_again, inputs), logits_before)
    v2 = client.get("/api/tasks/task-a/versions/2")
    assert v2["parent_version"] == 1 and v2["files"] != v1["files"]
    # The store never overwrites: putting other bytes under A v1's key is refused.
    from registry.storage.errors import ObjectExists

    src = tmp_path / "other.bin"
    src.write_bytes(b"not the adapter")
    with pytest.raises((ObjectExists, ValueError)):
        key = blob_key(v1["files"][1]["sha256"])
        store.put_file(key, src, sha256=sha256_bytes(b"not the adapter"))
    assert snapshot(v1["files"]) == a1_bytes


def test_failed_job_shows_reason_and_registers_nothing(stack_factory: Any, tiny_bert: Path, tmp_path: Path) -> None:
    """A stored dataset corrupted behind the registry's back: the job fails with a readable reason,
    registers nothing and leaves no scratch files."""
    import os

    from registry.storage.keys import blob_key

    st = stack_factory()
    st.start_api()
    st.start_worker()
    client = st.client()
    ds_id = _setup_task(client, tmp_path, tiny_bert)
    ds = client.get(f"/api/datasets/{ds_id}")
    blob = Path(st.settings.artifact_dir) / blob_key(ds["splits"]["train"]["sha256"])
    os.chmod(blob, 0o644)
    blob.write_bytes(blob.read_bytes().replace(b"good", b"gooD", 1))
    job = client.submit("sent", base_model="tiny-bert", dataset_id=ds_id, hyperparameters=FAST_HP)
    final = client.wait(job["id"], timeout=180, poll=0.3)
    assert final["state"] == "failed", final
    assert final["error_code"] == "integrity"
    assert "sha256" in final["error_message"]
    assert client.versions("sent") == []
    assert not list((st.home / "work").glob("job-*"))
