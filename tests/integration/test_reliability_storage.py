"""Registration is all-or-nothing against a real S3 protocol server (moto, its own process) whose
network path is cut at several points of an upload; the orphan reaper removes what a failed
registration left behind.

The S3 endpoint the code sees is a TCP proxy in front of moto: ``cut()`` drops every connection and
refuses new ones (a network cut or a dead server, as boto3 sees it) while moto keeps its objects,
so the test can then check exactly what was left in the bucket.

The worker steps run in-process (``workers.execute.execute_job``) so the cut can be placed between
two file uploads; the store, the database and the training are the real ones.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.s3 import MotoServer
from tests.fixtures.stack import Stack
from tests.integration.test_reliability import FAST_HP, api, setup_task, submit, versions

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


class CuttableProxy:
    """127.0.0.1:<port> -> upstream, with a switch that cuts the network."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.is_cut = threading.Event()
        self.closed = threading.Event()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.is_cut.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.is_cut.set()
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.is_cut.clear()

    def close(self) -> None:
        self.closed.set()
        self.cut()
        self.listener.close()


@pytest.fixture
def s3_path(moto_server_factory: Any) -> Iterator[tuple[MotoServer, CuttableProxy, MotoServer]]:
    """(moto, proxy, a MotoServer handle whose endpoint is the proxy)."""
    moto = moto_server_factory()
    proxy = CuttableProxy(("127.0.0.1", moto.port))
    via_proxy = MotoServer(endpoint_url=proxy.url)
    yield moto, proxy, via_proxy
    proxy.close()


def _bucket_keys(moto: MotoServer, bucket: str) -> set[str]:
    client: Any = moto.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def _referenced_keys(st: Stack) -> set[str]:
    from registry.db import session_scope
    from registry.storage.keys import blob_key
    from registry.versions.repository import referenced_sha256s

    with session_scope(st.settings, write=False) as session:
        return {blob_key(s) for s in referenced_sha256s(session)}


class CutAfterPuts:
    """Wraps the worker's real S3Store: cuts the network after ``n`` successful file uploads."""

    def __init__(self, store: Any, proxy: CuttableProxy, n: int) -> None:
        self.store, self.proxy, self.n, self.puts = store, proxy, n, 0

    def put_file(self, key: str, path: Path, *, sha256: str) -> None:
        if self.puts >= self.n:
            self.proxy.cut()
        self.store.put_file(key, path, sha256=sha256)
        self.puts += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.mark.parametrize("point", ["before-first-file", "after-first-file", "after-all-files-before-commit"])
def test_registration_is_all_or_nothing_when_s3_is_cut(point: str, stack_factory: Any, tiny_bert: Path,
                                                       tmp_path: Path, s3_path: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import workers.execute as execute
    from registry.storage import get_store
    from workers.reaper import reap_orphans

    moto, proxy, via_proxy = s3_path
    st = stack_factory(store="s3", s3=via_proxy)
    client = api(st)
    ds = setup_task(client, tiny_bert, tmp_path)
    bucket = st.settings.s3_bucket
    before = _bucket_keys(moto, bucket)
    assert before == _referenced_keys(st)  # base model files + dataset splits
    j = submit(client, ds, FAST_HP)

    real_store = get_store(st.settings)
    if point == "after-all-files-before-commit":
        def crash(*_: Any, **__: Any) -> Any:
            raise RuntimeError("the worker lost its database at commit time")

        monkeypatch.setattr(execute.versions, "register", crash)
        monkeypatch.setattr(execute, "get_store", lambda _s: real_store)
    else:
        n = 0 if point == "before-first-file" else 1
        monkeypatch.setattr(execute, "get_store", lambda _s: CutAfterPuts(real_store, proxy, n))

    assert execute.execute_job(j["id"], st.settings) == "failed"
    proxy.restore()
    final = client.get(f"/api/jobs/{j['id']}").json()
    assert final["state"] == "failed", final
    expected_code = "training_error" if point == "after-all-files-before-commit" else "storage_unavailable"
    assert final["error_code"] == expected_code, final
    assert versions(client) == []
    assert client.get("/api/tasks/sent/adapter").status_code == 404  # nothing pullable
    assert not list(Path(st.settings.work_dir or "").glob("job-*"))  # scratch removed

    orphans = _bucket_keys(moto, bucket) - before
    expected_orphans = {"before-first-file": 0, "after-first-file": 1}.get(point)
    if expected_orphans is not None:
        assert len(orphans) == expected_orphans, orphans
    else:
        assert len(orphans) >= 2  # adapter files (+ head)
    # Within the grace period nothing is touched; after it only unreferenced blobs go.
    assert reap_orphans(st.settings, real_store) == []
    removed = reap_orphans(st.settings, real_store, grace_s=0)
    assert set(removed) == orphans
    assert _bucket_keys(moto, bucket) == before == _referenced_keys(st)

    # The registry recovers: the same job resubmitted registers a version whose files are all there.
    j2 = submit(client, ds, {**FAST_HP, "seed": 2})
    monkeypatch.undo()
    assert execute.execute_job(j2["id"], st.settings).startswith("succeeded")
    v = versions(client)
    assert [x["version"] for x in v] == [1]
    assert {f"blobs/sha256/{f['sha256'][:2]}/{f['sha256']}" for f in v[0]["files"]} <= _bucket_keys(moto, bucket)


def test_uploads_through_the_api_with_s3_cut_leave_no_row(stack_factory: Any, tiny_bert: Path, tmp_path: Path,
                                                          s3_path: Any) -> None:
    """Base model and dataset uploads while S3 is unreachable: 503 problem+json, no row, and the same
    upload succeeds once S3 is back (create-only puts of what was half-stored are no-ops)."""
    moto, proxy, via_proxy = s3_path
    st = stack_factory(store="s3", s3=via_proxy)
    client = api(st)
    files = [("files", (p.name, p.read_bytes(), "application/octet-stream"))
             for p in sorted(tiny_bert.iterdir()) if p.is_file()]
    proxy.cut()
    r = client.post("/api/base-models", data={"name": "tiny-bert"}, files=files)
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert client.get("/api/base-models/tiny-bert").status_code == 404
    proxy.restore()
    ds = setup_task(client, tiny_bert, tmp_path)  # registers the base model now
    proxy.cut()
    r = client.post("/api/tasks/sent/datasets", data={"mapping": '{"text": "text", "label": "label"}'},
                    files={"train": ("t.tsv", b"text\tlabel\nfine\tpos\nawful\tneg\n")})
    assert r.status_code == 503, r.text
    proxy.restore()
    assert [d["id"] for d in client.get("/api/tasks/sent/datasets").json()["items"]] == [ds]
    assert _bucket_keys(moto, st.settings.s3_bucket) == _referenced_keys(st)


def test_local_store_orphans_and_stale_temp_files(stack_factory: Any, tiny_bert: Path, tmp_path: Path) -> None:
    import os
    import time

    from registry.hashing import sha256_bytes
    from registry.storage import get_store
    from registry.storage.keys import blob_key
    from workers.reaper import reap_orphans

    st = stack_factory()
    client = api(st)
    setup_task(client, tiny_bert, tmp_path)
    store = get_store(st.settings)
    data = b"an adapter whose registration crashed"
    key = blob_key(sha256_bytes(data))
    store.put_bytes(key, data, sha256=sha256_bytes(data))
    root = Path(st.settings.artifact_dir or "")
    temp = root / "blobs" / ".tmp-killed-writer"
    temp.write_bytes(b"half a file")
    old = time.time() - 7200
    os.utime(temp, (old, old))
    assert reap_orphans(st.settings, store) == []  # young orphan: kept through the grace period
    assert not temp.exists()  # the stale temp file of a killed writer is gone
    os.utime(root / key, (old, old))
    assert reap_orphans(st.settings, store) == [key]
    keys = {k for k, _, _ in store.list_keys("blobs/")}
    assert keys == _referenced_keys(st)
