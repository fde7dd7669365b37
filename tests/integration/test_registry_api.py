"""The registry on a real API process (uvicorn, SQLite, local store): import, immutability, aliases,
lineage both ways, pull cache and integrity, browse/search and pagination edges, and the CLI.

One stack for the module; versions are registered by import or directly through the service
(no training), so the whole module runs in seconds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from registry.cli import app as cli_app
from registry.client import ClientError
from registry.db import session_scope
from registry.errors import IntegrityFailure
from registry.models import Task
from registry.storage.keys import blob_key
from tests.fixtures.adapters import peft_lora_dir, pickle_bytes
from tests.fixtures.stack import TINY_DEV, TINY_TRAIN, Stack, make_stack

pytestmark = pytest.mark.integration
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def st(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Iterator[Stack]:
    stack = make_stack(tmp_path_factory.mktemp("registry-api"), max_page_size=5)
    stack.start_api()
    c = stack.client()
    c.register_base_model("tiny-bert", tiny_bert)
    c.create_task("sent", type="single_label", labels=["neg", "pos"], tags=["demo"])
    c.create_task("empty", type="single_label", labels=["neg", "pos"])
    c.close()
    yield stack
    stack.stop()


@pytest.fixture
def client(st: Stack, tmp_path: Path) -> Iterator[Any]:
    from registry.client import RegistryClient

    assert st.api_url
    c = RegistryClient(st.api_url, token=st.token, cache_dir=tmp_path / "cache")
    yield c
    c.close()


def _import(client: Any, tmp: Path, seed: int, task: str = "sent", **kw: Any) -> dict[str, Any]:
    return client.import_adapter(task, peft_lora_dir(tmp / f"a{seed}", seed=seed), base_model="tiny-bert", **kw)


def _problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def _post_files(st: Stack, task: str, files: dict[str, bytes], base: str = "tiny-bert",
                token: bool = True) -> httpx.Response:
    return httpx.post(f"{st.api_url}/api/tasks/{task}/versions/import", data={"base_model": base},
                      files=[("files", (n, b, "application/octet-stream")) for n, b in files.items()],
                      headers=st.headers() if token else {}, timeout=30)


# -- import ----------------------------------------------------------------------------------------
def test_import_registers_an_imported_version(st: Stack, client: Any, tmp_path: Path) -> None:
    v = _import(client, tmp_path, 1, metrics={"accuracy": 0.75}, description="trained on a laptop")
    assert v["origin"] == "imported" and v["method"] == "lora" and v["job_id"] is None
    assert v["dataset_id"] is None and v["base_model"] == "tiny-bert"
    assert v["method_config"]["r"] == 8 and v["metrics"] == {"accuracy": 0.75}
    assert {f["name"] for f in v["files"]} == {"adapter_config.json", "adapter_model.safetensors",
                                                "head.safetensors"}
    lin = client.lineage("sent", v["version"])
    assert lin["origin"] == "imported" and lin["job"] is None and lin["dataset"] is None
    assert lin["base_model"]["name"] == "tiny-bert" and len(lin["base_model"]["sha256"]) == 64
    # The stored config gained our metadata (so the client can load it); the weights are byte-identical.
    path = client.pull("sent", version=v["version"])
    from registry.methods import read_adapter_meta

    meta = read_adapter_meta(path)
    assert meta["method"] == "lora" and meta["labels"] == ["neg", "pos"]
    assert meta["base_model"]["sha256"] == lin["base_model"]["sha256"]
    assert (path / "adapter_model.safetensors").read_bytes() == \
        (tmp_path / "a1" / "adapter_model.safetensors").read_bytes()


def test_import_refuses_pickles_wrong_shapes_and_unknown_base(st: Stack, client: Any, tmp_path: Path) -> None:
    good = peft_lora_dir(tmp_path / "good", seed=9)
    cfg = (good / "adapter_config.json").read_bytes()
    weights = (good / "adapter_model.safetensors").read_bytes()
    head = (good / "head.safetensors").read_bytes()
    before = len(client.versions("sent"))

    body = _problem(_post_files(st, "sent", {"adapter_config.json": cfg, "adapter_model.bin": pickle_bytes()}), 422)
    assert "pickle" in body["detail"] and body["field"] == "files"
    body = _problem(_post_files(st, "sent", {"adapter_config.json": cfg,
                                             "adapter_model.safetensors": pickle_bytes(),
                                             "head.safetensors": head}), 422)
    assert "pickle" in body["detail"] and "not read" in body["detail"]
    # a zip (torch.save's default format) renamed .safetensors
    body = _problem(_post_files(st, "sent", {"adapter_config.json": cfg,
                                             "adapter_model.safetensors": b"PK\x03\x04" + b"\0" * 64,
                                             "head.safetensors": head}), 422)
    assert "pickle/zip" in body["detail"]
    wrong = peft_lora_dir(tmp_path / "wrong", seed=3, in_dim=48)  # LoRA A does not match hidden 32
    body = _problem(_post_files(st, "sent", {n: (wrong / n).read_bytes() for n in
                                             ("adapter_config.json", "adapter_model.safetensors",
                                              "head.safetensors")}), 422)
    assert "does not fit base model" in body["detail"] and "query" in body["detail"]
    deep = peft_lora_dir(tmp_path / "deep", seed=4, layers=3)  # layer 2 does not exist in a 2-layer base
    body = _problem(_post_files(st, "sent", {n: (deep / n).read_bytes() for n in
                                             ("adapter_config.json", "adapter_model.safetensors",
                                              "head.safetensors")}), 422)
    assert "layer 2" in body["detail"]
    nohead = peft_lora_dir(tmp_path / "nohead", seed=5, labels=3)  # head for 3 labels, task has 2
    body = _problem(_post_files(st, "sent", {n: (nohead / n).read_bytes() for n in
                                             ("adapter_config.json", "adapter_model.safetensors",
                                              "head.safetensors")}), 422)
    assert "head weight" in body["detail"]
    body = _problem(_post_files(st, "sent", {"adapter_config.json": cfg, "adapter_model.safetensors": weights,
                                             "head.safetensors": head}, base="no-such-base"), 404)
    assert body["field"] == "base_model"
    _problem(_post_files(st, "sent", {"adapter_config.json": b"{not json", "adapter_model.safetensors": weights,
                                      "head.safetensors": head}), 422)
    _problem(_post_files(st, "sent", {"adapter_config.json": cfg, "adapter_model.safetensors": weights},
                         token=False), 401)
    _problem(_post_files(st, "nope", {"adapter_config.json": cfg, "adapter_model.safetensors": weights}), 404)
    # the client refuses the same way (it sends .bin files along so the server says why)
    (good / "adapter_model.bin").write_bytes(pickle_bytes())
    with pytest.raises(ClientError) as exc:
        client.import_adapter("sent", good, base_model="tiny-bert")
    assert exc.value.status == 422 and "pickle" in str(exc.value)
    assert len(client.versions("sent")) == before  # nothing was registered


# -- immutability, aliases ---------------------------------------------------------------------------
def test_versions_are_immutable_metadata_editable(st: Stack, client: Any, tmp_path: Path) -> None:
    v = _import(client, tmp_path, 20)["version"]
    base = f"{st.api_url}/api/tasks/sent/versions/{v}"
    for method in ("PUT", "POST", "DELETE", "PATCH"):
        body = _problem(httpx.request(method, f"{base}/files/adapter_model.safetensors", headers=st.headers(),
                                      content=b"x"), 409)
        assert "immutable" in body["detail"]
    _problem(httpx.patch(base, json={"files": []}, headers=st.headers()), 422)
    r = httpx.patch(base, json={"description": "best so far", "tags": ["keep", "ab-test"]}, headers=st.headers())
    assert r.status_code == 200, r.text
    assert r.json()["description"] == "best so far" and r.json()["tags"] == ["ab-test", "keep"]
    assert r.json()["files"] == client.get(f"/api/tasks/sent/versions/{v}")["files"]
    tagged = client.get("/api/versions", tag="keep")["items"]
    assert [x["version"] for x in tagged] == [v]


def test_aliases_move_with_history_and_pull_by_alias(st: Stack, client: Any, tmp_path: Path) -> None:
    a = _import(client, tmp_path, 30)["version"]
    b = _import(client, tmp_path, 31)["version"]
    assert client.promote("sent", "production", a)["version"] == a
    assert client.manifest("sent", alias="production")["version"] == a
    # one CLI command promotes
    res = CliRunner().invoke(cli_app, ["promote", "sent", "production", str(b), "--url", st.api_url,
                                       "--token", st.token])
    assert res.exit_code == 0, res.output
    m = client.manifest("sent", alias="production")
    assert m["version"] == b and "production" in m["aliases"]
    assert client.manifest("sent", version=a)["version"] == a
    assert client.manifest("sent")["version"] == client.versions("sent")[0]["version"]  # latest
    client.promote("sent", "staging", a)
    r = httpx.delete(f"{st.api_url}/api/tasks/sent/aliases/staging", headers=st.headers())
    assert r.status_code == 204
    al = client.get("/api/tasks/sent/aliases")
    assert {x["name"]: x["version"] for x in al["aliases"]}["production"] == b
    moves = [(e["alias"], e["from"], e["to"]) for e in al["history"]]
    assert moves[:4] == [("staging", a, None), ("staging", None, a), ("production", a, b), ("production", None, a)]
    assert all(e["actor"] == "admin" for e in al["history"][:4])
    _problem(httpx.get(f"{st.api_url}/api/tasks/sent/adapter", params={"alias": "staging"}), 404)
    _problem(httpx.put(f"{st.api_url}/api/tasks/sent/aliases/latest", json={"version": a}, headers=st.headers()),
             422)
    _problem(httpx.put(f"{st.api_url}/api/tasks/sent/aliases/production", json={"version": 9999},
                       headers=st.headers()), 404)
    _problem(httpx.put(f"{st.api_url}/api/tasks/sent/aliases/production", json={"version": a}), 401)


# -- lineage both ways --------------------------------------------------------------------------------
def test_lineage_both_ways(st: Stack, client: Any, tmp_path: Path) -> None:
    from registry.basemodels import repository as bm_repo
    from registry.datasets import repository as ds_repo
    from registry.versions import service

    client.create_task("lin", type="single_label", labels=["neg", "pos"])
    (tmp_path / "train.tsv").write_text(TINY_TRAIN)
    (tmp_path / "dev.tsv").write_text(TINY_DEV)
    ds = client.upload_dataset("lin", tmp_path / "train.tsv", dev=tmp_path / "dev.tsv",
                               mapping={"text": "text", "label": "label"})
    files = _import(client, tmp_path, 40, task="lin")["files"]
    with session_scope(st.settings) as s:
        task = s.query(Task).filter_by(name="lin").one()
        bm = bm_repo.get_by_name(s, "tiny-bert")
        dataset = ds_repo.get(s, ds["id"])
        assert bm is not None and dataset is not None
        parent = service.resolve(s, task, version=1)
        for _ in range(2):  # a warm-start chain on the dataset: v2 <- v1, v3 <- v2
            parent = service.register(s, task=task, base_model=bm, method="lora", method_config={"r": 8},
                                      files=files, metrics={"accuracy": 0.9}, trainable_params=10, total_params=100,
                                      code_version="test", dataset=dataset, parent=parent)
    lin = client.lineage("lin", 3)
    assert [x["version"] for x in lin["ancestry"]] == [2, 1]
    assert lin["parent"]["version"] == 2 and lin["dataset"]["sha256"] == ds["sha256"]
    assert [x["version"] for x in client.lineage("lin", 1)["children"]] == [2]
    on_ds = client.get("/api/versions", dataset_id=ds["id"])["items"]
    assert sorted(v["version"] for v in on_ds) == [2, 3] and all(v["task"] == "lin" for v in on_ds)
    down = client.get("/api/lineage", dataset_id=ds["id"])
    assert down["dataset"]["sha256"] == ds["sha256"]
    assert [(x["version"], x["parent"]["version"]) for x in down["items"]] == [(3, 2), (2, 1)]
    on_base = client.get("/api/lineage", base_model="tiny-bert")
    assert on_base["base_model"]["name"] == "tiny-bert" and len(on_base["items"]) >= 3
    assert any(x["origin"] == "imported" for x in on_base["items"])
    by_bm = client.get("/api/versions", base_model="tiny-bert", task="lin")["items"]
    assert [v["version"] for v in by_bm] == [3, 2, 1]
    _problem(httpx.get(f"{st.api_url}/api/lineage"), 422)
    _problem(httpx.get(f"{st.api_url}/api/lineage", params={"dataset_id": 99999}), 404)
    res = CliRunner().invoke(cli_app, ["lineage", "lin", "3", "--url", st.api_url, "--token", st.token])
    assert res.exit_code == 0 and "parent lin v2" in res.output and "parent lin v1" in res.output
    res = CliRunner().invoke(cli_app, ["trained-on", "--dataset", str(ds["id"]), "--url", st.api_url,
                                       "--token", st.token])
    assert res.exit_code == 0 and "lin" in res.output and "v2" in res.output, res.output


# -- pull: cache and integrity --------------------------------------------------------------------------
def test_pull_caches_by_sha256(st: Stack, client: Any, tmp_path: Path) -> None:
    v = _import(client, tmp_path, 50)["version"]
    p1 = client.pull("sent", version=v)
    assert client.last_pull_downloaded == 3
    p2 = client.pull("sent", version=v)
    assert client.last_pull_downloaded == 0 and p1 == p2
    assert sorted(f.name for f in p1.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                      "head.safetensors"]
    r = httpx.get(f"{st.api_url}/api/blobs/{client.manifest('sent', version=v)['files'][1]['sha256']}",
                  headers={"Range": "bytes=0-7"})
    assert r.status_code == 206 and len(r.content) == 8 and r.headers["X-Checksum-Sha256"]
    assert r.headers["Repr-Digest"].startswith("sha-256=:")
    _problem(httpx.get(f"{st.api_url}/api/blobs/{'0' * 64}"), 404)
    _problem(httpx.get(f"{st.api_url}/api/blobs/not-a-sha"), 422)


def test_pull_refuses_a_corrupt_stored_file_and_caches_nothing(st: Stack, client: Any, tmp_path: Path) -> None:
    v = _import(client, tmp_path, 60)
    sha = next(f["sha256"] for f in v["files"] if f["name"] == "adapter_model.safetensors")
    assert st.settings.artifact_dir is not None
    stored = st.settings.artifact_dir.joinpath(*blob_key(sha).split("/"))
    os.chmod(stored, 0o644)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01  # flip one byte in the store
    stored.write_bytes(bytes(data))
    with pytest.raises(IntegrityFailure) as exc:
        client.pull("sent", version=v["version"])
    assert "corrupt" in str(exc.value) and "Nothing was cached" in str(exc.value)
    assert not client._blob_path(sha).exists()
    assert not (client.cache_dir / "adapters" / "sent").exists() or not any(
        p.name.startswith(f"v{v['version']}-") for p in (client.cache_dir / "adapters" / "sent").iterdir())
    leftovers = [p for p in client.cache_dir.rglob("*") if p.is_file() and p.name.endswith(".part")]
    assert leftovers == []


# -- browse, search, pagination ------------------------------------------------------------------------
def test_browse_search_and_pagination_edges(st: Stack, client: Any, tmp_path: Path) -> None:
    assert client.get("/api/tasks/empty/versions") == {"items": [], "next_cursor": None}
    assert client.get("/api/versions", task="empty", method="lora")["items"] == []
    client.create_task("five", type="single_label", labels=["neg", "pos"], description="exactly five versions")
    for i in range(5):
        _import(client, tmp_path, 70 + i, task="five", metrics={"accuracy": 0.5 + i / 10})
    page = client.get("/api/tasks/five/versions", limit=5)  # exactly one page
    assert [v["version"] for v in page["items"]] == [5, 4, 3, 2, 1] and page["next_cursor"] is None
    page = client.get("/api/tasks/five/versions", limit=1000)  # capped at max_page_size (5 here)
    assert len(page["items"]) == 5
    p1 = client.get("/api/tasks/five/versions", limit=2)
    p2 = client.get("/api/tasks/five/versions", limit=2, cursor=p1["next_cursor"])
    p3 = client.get("/api/tasks/five/versions", limit=2, cursor=p2["next_cursor"])
    assert [v["version"] for v in p1["items"] + p2["items"] + p3["items"]] == [5, 4, 3, 2, 1]
    assert p3["next_cursor"] is None
    for bad in ("garbage!!", "e30", "WzEsMl0x", "W10"):
        body = _problem(httpx.get(f"{st.api_url}/api/tasks/five/versions", params={"cursor": bad}), 422)
        assert body["field"] == "cursor"
    _problem(httpx.get(f"{st.api_url}/api/versions", params={"cursor": "%%%"}), 422)
    _problem(httpx.get(f"{st.api_url}/api/tasks", params={"limit": 0}), 422)
    _problem(httpx.get(f"{st.api_url}/api/versions", params={"min_metric": "nan"}), 422)
    _problem(httpx.get(f"{st.api_url}/api/versions", params={"method": "nope"}), 422)
    good = client.get("/api/versions", task="five", min_metric=0.75)["items"]
    assert sorted(v["version"] for v in good) == [4, 5]
    found = client.get("/api/versions", q="exactly five")["items"]
    assert {v["task"] for v in found} == {"five"} and len(found) == 5
    assert all(v["origin"] == "imported" for v in client.get("/api/versions", origin="imported")["items"])
    assert client.get("/api/tasks", q="fiv")["items"][0]["name"] == "five"
    assert [t["name"] for t in client.get("/api/tasks", tag="demo")["items"]] == ["sent"]
    assert client.get("/api/base-models", q="tiny")["items"][0]["name"] == "tiny-bert"
    assert client.get("/api/datasets")["items"] is not None and client.get("/api/jobs")["items"] == []
    _problem(httpx.get(f"{st.api_url}/api/tasks/nope/versions"), 404)


# -- the CLI: every command reaches the API ----------------------------------------------------------
def test_cli_commands(st: Stack, tmp_path: Path) -> None:
    runner = CliRunner()
    common = ["--url", st.api_url or "", "--token", st.token]
    env = {"ADAPTER_REGISTRY_CACHE": str(tmp_path / "cli-cache")}
    d = peft_lora_dir(tmp_path / "cli", seed=90)
    res = runner.invoke(cli_app, ["import", "sent", str(d), "--base-model", "tiny-bert", "--metric",
                                  "accuracy=0.8", "--json", *common], env=env)
    assert res.exit_code == 0, res.output
    assert '"origin": "imported"' in res.output
    for args in (["base-models", "list"], ["base-models", "show", "tiny-bert"], ["tasks", "list"],
                 ["tasks", "show", "sent"], ["datasets", "list"], ["jobs", "list"], ["versions", "list", "sent"],
                 ["versions", "show", "sent", "1"], ["lineage", "sent", "1"], ["pull", "sent", "--version", "1"]):
        res = runner.invoke(cli_app, [*args, *common], env=env)
        assert res.exit_code == 0, (args, res.output)
    (d / "adapter_model.safetensors").write_bytes(pickle_bytes())
    res = runner.invoke(cli_app, ["import", "sent", str(d), "--base-model", "tiny-bert", *common], env=env)
    assert res.exit_code == 2 and "pickle" in res.output
    res = runner.invoke(cli_app, ["--help"])
    for cmd in ("serve", "worker", "submit", "pull", "promote", "lineage", "import", "base-models", "tasks",
                "datasets", "jobs", "versions"):
        assert cmd in res.output
    res = runner.invoke(cli_app, ["submit", "--help"])
    assert "--wait" in res.output


def test_private_reads_need_a_token_on_the_fast_routes(stack_factory: Any, tiny_bert: Path, tmp_path: Path) -> None:
    """The pull manifest and version list do their own token check (one thread hop); it must match ReaderDep."""
    st = stack_factory(public_reads="false")
    st.start_api()
    c = st.client()
    c.register_base_model("tiny-bert", tiny_bert)
    c.create_task("sent", type="single_label", labels=["neg", "pos"])
    _import(c, tmp_path, 1)
    for path in ("/api/tasks/sent/adapter", "/api/tasks/sent/versions", "/api/tasks/sent/versions/1"):
        _problem(httpx.get(f"{st.api_url}{path}"), 401)
        _problem(httpx.get(f"{st.api_url}{path}", headers={"Authorization": "Bearer nope"}), 401)
        assert httpx.get(f"{st.api_url}{path}", headers=st.headers()).status_code == 200
    assert c.manifest("sent")["version"] == 1
    c.close()
