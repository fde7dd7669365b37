"""ArtifactStore contract, run against both backends: a local directory and a real S3 protocol
server (moto's server mode in a separate process, see tests/fixtures/s3.py; no in-process mocks).
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import pytest

from registry.errors import Conflict, IntegrityFailure, NotFound, RegistryError
from registry.storage import (
    ArtifactStore,
    InvalidRange,
    LocalStore,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    blob_key,
    get_store,
)
from registry.storage.keys import check_key, sha256_of_key
from registry.storage.s3 import S3Store

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.fixtures.s3 import MotoServer

pytest_plugins = ["tests.fixtures.s3"]

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob(data: bytes) -> tuple[str, str]:
    digest = sha(data)
    return blob_key(digest), digest


def unique(n: int = 64) -> bytes:
    """Content no other test stores (keys are content addressed)."""
    return (uuid.uuid4().hex * (n // 32 + 1)).encode()[:n]


def s3_store(server: MotoServer, **kwargs: Any) -> S3Store:
    kwargs.setdefault("bucket", server.new_bucket())
    kwargs.setdefault("multipart_threshold", 6 * MiB)
    kwargs.setdefault("part_size", 5 * MiB)
    return S3Store(
        endpoint_url=server.endpoint_url,
        access_key=server.access_key,
        secret_key=server.secret_key,
        region=server.region,
        **kwargs,
    )


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalStore | S3Store]:
    if request.param == "local":
        yield LocalStore(tmp_path / "store")
    else:
        yield s3_store(request.getfixturevalue("s3_server"))


def temp_files(store: LocalStore) -> list[Path]:
    return [p for p in store.root.rglob("*") if p.name.startswith(".")]


def pending_uploads(store: S3Store) -> list[dict[str, Any]]:
    return list(store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []))


# --------------------------------------------------------------------------- keys


def test_blob_key_shape() -> None:
    digest = sha(b"x")
    assert blob_key(digest) == f"blobs/sha256/{digest[:2]}/{digest}"
    assert sha256_of_key(blob_key(digest)) == digest
    assert sha256_of_key(f"blobs/sha256/00/{digest}") is None  # fan-out dir must match


@pytest.mark.parametrize(
    "bad",
    [
        "../" + "a" * 61,
        "/etc/passwd",
        "../../etc/passwd",
        "A" * 64,
        sha(b"x").upper(),
        "a" * 63,
        "a" * 65,
        "",
        "g" * 64,
        "a" * 62 + "/a",
        "a" * 63 + "\n",
        " " + "a" * 63,
    ],
)
def test_blob_key_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        blob_key(bad)


@pytest.mark.parametrize(
    "key", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", ".tmp-x", "a\\b", "a/b/", "ä"]
)
def test_backends_refuse_unsafe_keys(store: ArtifactStore, key: str) -> None:
    with pytest.raises(ValueError):
        store.put_bytes(key, b"x", sha256=sha(b"x"))
    with pytest.raises(ValueError):
        store.open(key)
    with pytest.raises(ValueError):
        store.exists(key)


def test_blob_key_must_address_the_declared_sha256(store: ArtifactStore) -> None:
    with pytest.raises(ValueError):
        store.put_bytes(blob_key(sha(b"other")), b"data", sha256=sha(b"data"))
    with pytest.raises(ValueError):
        store.put_bytes(blob_key(sha(b"data")), b"data", sha256="not-a-digest")


# --------------------------------------------------------------------------- round trips


def test_satisfies_protocol(store: ArtifactStore) -> None:
    assert isinstance(store, ArtifactStore)


def test_put_bytes_round_trip(store: ArtifactStore, tmp_path: Path) -> None:
    data = unique(1000)
    key, digest = blob(data)
    assert not store.exists(key)
    store.put_bytes(key, data, sha256=digest)
    assert store.exists(key)
    assert store.size(key) == len(data)
    with store.open(key) as f:
        assert f.read() == data
    dest = tmp_path / "out" / "file.bin"
    store.get_file(key, dest)
    assert dest.read_bytes() == data
    assert [p.name for p in dest.parent.iterdir()] == ["file.bin"]  # no temp left behind


@pytest.mark.parametrize("size", [0, 1, 3 * MiB + 17, 13 * MiB + 5])  # the last is multipart on S3
def test_put_file_round_trip(store: ArtifactStore, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    key, digest = blob(data)
    store.put_file(key, src, sha256=digest)
    assert store.size(key) == size
    with store.open(key) as f:
        assert hashlib.sha256(f.read()).hexdigest() == digest
    if isinstance(store, S3Store):
        head = store.client.head_object(Bucket=store.bucket, Key=key)
        assert head["Metadata"]["sha256"] == digest  # x-amz-meta-sha256
        assert pending_uploads(store) == []


def test_same_content_again_is_a_noop(store: ArtifactStore) -> None:
    data = unique()
    key, digest = blob(data)
    store.put_bytes(key, data, sha256=digest)
    before = list(store.list_keys(key))
    store.put_bytes(key, data, sha256=digest)
    assert list(store.list_keys(key)) == before  # same object, same mtime


def test_different_content_at_existing_key_raises_object_exists(store: ArtifactStore) -> None:
    # Blob keys make this impossible through the API; plain keys show the store-level guarantee.
    key = f"objects/{uuid.uuid4().hex}"
    first, second = unique(), unique()
    store.put_bytes(key, first, sha256=sha(first))
    with pytest.raises(ObjectExists) as excinfo:
        store.put_bytes(key, second, sha256=sha(second))
    assert isinstance(excinfo.value, Conflict) and excinfo.value.status == 409
    assert excinfo.value.existing_sha256 == sha(first)
    with store.open(key) as f:
        assert f.read() == first


def test_wrong_sha256_is_refused_and_nothing_is_stored(store: ArtifactStore, tmp_path: Path) -> None:
    declared = unique()
    key, digest = blob(declared)
    with pytest.raises(IntegrityFailure):
        store.put_bytes(key, b"something else", sha256=digest)
    assert not store.exists(key)
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(8 * MiB))  # multipart on S3
    with pytest.raises(IntegrityFailure):
        store.put_file(key, src, sha256=digest)
    assert not store.exists(key)
    assert list(store.list_keys("")) == []
    if isinstance(store, LocalStore):
        assert temp_files(store) == []
    if isinstance(store, S3Store):
        assert pending_uploads(store) == []


def test_wrong_sha256_for_an_existing_key_is_still_refused(store: ArtifactStore) -> None:
    data = unique()
    key, digest = blob(data)
    store.put_bytes(key, data, sha256=digest)
    with pytest.raises(IntegrityFailure):
        store.put_bytes(key, b"not the declared content", sha256=digest)
    with store.open(key) as f:
        assert f.read() == data


def test_concurrent_puts_of_one_blob(store: ArtifactStore) -> None:
    data = os.urandom(256 * 1024)
    key, digest = blob(data)
    errors: list[BaseException] = []

    def put() -> None:
        try:
            store.put_bytes(key, data, sha256=digest)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [k for k, _, _ in store.list_keys("blobs/")] == [key]
    with store.open(key) as f:
        assert f.read() == data


def test_concurrent_puts_of_different_content_one_wins(store: ArtifactStore) -> None:
    key = f"objects/{uuid.uuid4().hex}"
    contents = [unique(100_000) for _ in range(6)]
    outcome: dict[int, BaseException | None] = {}

    def put(i: int) -> None:
        try:
            store.put_bytes(key, contents[i], sha256=sha(contents[i]))
            outcome[i] = None
        except BaseException as exc:
            outcome[i] = exc

    threads = [threading.Thread(target=put, args=(i,)) for i in range(len(contents))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, exc in outcome.items() if exc is None]
    assert len(winners) == 1, outcome
    assert all(isinstance(exc, ObjectExists) for exc in outcome.values() if exc is not None)
    with store.open(key) as f:
        assert f.read() == contents[winners[0]]


# --------------------------------------------------------------------------- reads


def test_range_reads(store: ArtifactStore) -> None:
    data = bytes(range(256)) * 4
    key, digest = blob(data)
    store.put_bytes(key, data, sha256=digest)
    for start, end in [(0, 1), (1, 4), (100, 356), (1000, None), (0, None), (1020, 5000)]:
        with store.open_range(key, start, end) as f:
            assert f.read() == data[start:end], (start, end)
    with pytest.raises(InvalidRange) as excinfo:
        store.open_range(key, len(data), None)
    assert excinfo.value.status == 416
    for start, end in [(-1, None), (5, 5), (5, 2)]:
        with pytest.raises(ValueError):
            store.open_range(key, start, end)


def test_missing_objects(store: ArtifactStore, tmp_path: Path) -> None:
    key = blob_key(sha(unique()))
    assert not store.exists(key)
    for call in (
        lambda: store.open(key),
        lambda: store.size(key),
        lambda: store.open_range(key, 0, None),
        lambda: store.get_file(key, tmp_path / "dl" / "dest"),
    ):
        with pytest.raises(ObjectNotFound) as excinfo:
            call()
        assert isinstance(excinfo.value, NotFound) and isinstance(excinfo.value, FileNotFoundError)
        assert excinfo.value.status == 404
    assert list((tmp_path / "dl").iterdir()) == []  # get_file left no temp file
    store.delete(key)  # idempotent


def test_delete(store: ArtifactStore) -> None:
    data = unique()
    key, digest = blob(data)
    store.put_bytes(key, data, sha256=digest)
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)
    store.put_bytes(key, data, sha256=digest)  # can be stored again after the reaper removed it
    assert store.exists(key)


def test_list_keys(store: ArtifactStore) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    stored = {}
    for i in range(5):
        data = unique(100 + i)
        key, digest = blob(data)
        store.put_bytes(key, data, sha256=digest)
        stored[key] = len(data)
    store.put_bytes("objects/x", b"x", sha256=sha(b"x"))
    listed = list(store.list_keys("blobs/sha256/"))
    assert sorted(k for k, _, _ in listed) == sorted(stored)
    for key, size, mtime in listed:
        assert size == stored[key]
        assert mtime.tzinfo is not None and before <= mtime <= datetime.now(UTC) + timedelta(seconds=5)
    some = next(iter(stored))
    fan_out = some[: len("blobs/sha256/ab/")]
    assert {k for k, _, _ in store.list_keys(fan_out)} == {k for k in stored if k.startswith(fan_out)}
    assert [k for k, _, _ in store.list_keys(some[:-3])] == [some]  # mid-segment prefix
    assert [k for k, _, _ in store.list_keys("objects/")] == ["objects/x"]
    assert len(list(store.list_keys(""))) == 6
    assert list(store.list_keys("nothing/")) == []


def test_s3_list_keys_paginates(s3_server: MotoServer) -> None:
    store = s3_store(s3_server, list_page_size=2)
    keys = []
    for _ in range(7):
        data = unique()
        key, digest = blob(data)
        store.put_bytes(key, data, sha256=digest)
        keys.append(key)
    assert [k for k, _, _ in store.list_keys("blobs/")] == sorted(keys)


def test_reads_verify_blob_content(store: ArtifactStore, tmp_path: Path) -> None:
    """A blob whose stored bytes no longer match its address is never handed out silently."""
    data = unique(5000)
    key, digest = blob(data)
    store.put_bytes(key, data, sha256=digest)
    if isinstance(store, LocalStore):
        path = store.root / key
        path.chmod(0o644)
        path.write_bytes(b"bit rot" + data[7:])
    else:
        assert isinstance(store, S3Store)
        store.client.put_object(Bucket=store.bucket, Key=key, Body=b"bit rot" + data[7:], Metadata={"sha256": digest})
    with pytest.raises(IntegrityFailure), store.open(key) as f:
        f.read()
    dest = tmp_path / "dl" / "file"
    with pytest.raises(IntegrityFailure):
        store.get_file(key, dest)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


# --------------------------------------------------------------------------- presigned URLs


def _sigv4_query_signature(url: str, method: str, secret_key: str) -> str:
    """Recompute a SigV4 query-string signature independently of botocore (UNSIGNED-PAYLOAD)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "X-Amz-Signature"]
    canonical_query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query))
    params = dict(query)
    assert params["X-Amz-SignedHeaders"] == "host"
    canonical_request = "\n".join(
        [method, parts.path, canonical_query, f"host:{parts.netloc}\n", "host", "UNSIGNED-PAYLOAD"]
    )
    date, region, service, _ = params["X-Amz-Credential"].split("/")[1:]
    scope = "/".join([date, region, service, "aws4_request"])
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            params["X-Amz-Date"],
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    signing_key = ("AWS4" + secret_key).encode()
    for part in (date, region, service, "aws4_request"):
        signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
    return hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_presigned_url(store: ArtifactStore, request: pytest.FixtureRequest) -> None:
    data = unique(3000)
    key, digest = blob(data)
    store.put_bytes(key, data, sha256=digest)
    url = store.presigned_url(key, 120)
    if isinstance(store, LocalStore):
        assert url is None
        return
    assert isinstance(store, S3Store) and url is not None
    params = dict(parse_qsl(urlsplit(url).query))
    assert params["X-Amz-Expires"] == "120"
    assert params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == data

    # GET-only, one object only: the signature covers the method and the path. Verified
    # independently here because moto's server does not check presigned signatures (a real
    # S3/MinIO does; with REGISTRY_TEST_S3_ENDPOINT_URL the live PUT below must be refused).
    secret = request.getfixturevalue("s3_server").secret_key
    assert _sigv4_query_signature(url, "GET", secret) == params["X-Amz-Signature"]
    assert _sigv4_query_signature(url, "PUT", secret) != params["X-Amz-Signature"]
    assert _sigv4_query_signature(url, "DELETE", secret) != params["X-Amz-Signature"]
    other = url.replace(digest, sha(b"other"))
    assert _sigv4_query_signature(other, "GET", secret) != params["X-Amz-Signature"]
    server_checks_signatures = "127.0.0.1" not in url and "localhost" not in url
    if server_checks_signatures:
        assert httpx.put(url, content=b"evil").status_code == 403
        assert httpx.get(url).content == data

    with pytest.raises(ValueError):
        store.presigned_url(key, 0)


def test_presigned_url_for_public_endpoint(s3_server: MotoServer) -> None:
    store = s3_store(s3_server, public_endpoint_url="https://files.example.org")
    url = store.presigned_url(blob_key(sha(b"x")), 60)
    assert url is not None and url.startswith("https://files.example.org/")


# --------------------------------------------------------------------------- S3 specifics


def test_s3_server_honours_if_none_match(s3_server: MotoServer) -> None:
    """The conditional put our code sends is enforced by the server we test against."""
    from botocore.exceptions import ClientError

    store = s3_store(s3_server)
    store.put_bytes("objects/a", b"a", sha256=sha(b"a"))
    with pytest.raises(ClientError) as excinfo:
        store.client.put_object(Bucket=store.bucket, Key="objects/a", Body=b"b", IfNoneMatch="*")
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


@pytest.mark.parametrize("size", [100, 8 * MiB])  # single PUT and multipart complete
def test_s3_conditional_write_catches_a_lost_race(
    s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """If another writer wins between the HEAD check and the write, the server's 412 decides."""
    store = s3_store(s3_server)
    key = "objects/raced"
    first, second = os.urandom(size), os.urandom(size)
    store.put_bytes(key, first, sha256=sha(first))
    real = store._existing_sha256
    calls = []

    def head_misses_once(k: str) -> str | None:
        calls.append(k)
        return None if len(calls) == 1 else real(k)

    monkeypatch.setattr(store, "_existing_sha256", head_misses_once)
    with pytest.raises(ObjectExists):
        store.put_bytes(key, second, sha256=sha(second))
    with store.open(key) as f:
        assert f.read() == first
    assert pending_uploads(store) == []


def test_s3_object_without_recorded_sha256_is_hashed(s3_server: MotoServer) -> None:
    store = s3_store(s3_server)
    data = unique()
    key, digest = blob(data)
    store.client.put_object(Bucket=store.bucket, Key=key, Body=data)  # written by another tool
    store.put_bytes(key, data, sha256=digest)  # same content: no-op
    store.client.put_object(Bucket=store.bucket, Key="objects/z", Body=b"zz")
    with pytest.raises(ObjectExists) as excinfo:
        store.put_bytes("objects/z", b"z", sha256=sha(b"z"))
    assert excinfo.value.existing_sha256 == sha(b"zz")


def test_s3_ensure_bucket(s3_server: MotoServer) -> None:
    store = S3Store(
        bucket=f"test-{uuid.uuid4().hex[:12]}",
        endpoint_url=s3_server.endpoint_url,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    with pytest.raises(StorageError):
        store.put_bytes("objects/a", b"a", sha256=sha(b"a"))
    store.ensure_bucket()
    store.ensure_bucket()  # idempotent
    store.put_bytes("objects/a", b"a", sha256=sha(b"a"))
    assert store.exists("objects/a")


def test_s3_server_down_gives_a_clean_error_in_bounded_time(
    moto_server_factory: Callable[..., MotoServer],
) -> None:
    """moto keeps state in memory: after a restart the bucket is re-created empty."""
    server = moto_server_factory()
    store = s3_store(server, bucket=server.bucket, connect_timeout=1, read_timeout=5, max_attempts=2)
    data = unique()
    key, digest = blob(data)
    server.stop()
    for call in (
        lambda: store.put_bytes(key, data, sha256=digest),
        lambda: store.exists(key),
        lambda: store.open(key),
        lambda: list(store.list_keys("")),
    ):
        started = time.monotonic()
        with pytest.raises(StorageError) as excinfo:
            call()
        assert time.monotonic() - started < 15
        assert isinstance(excinfo.value, RegistryError) and excinfo.value.status == 503
    server.start()  # empty again; the store recovers without being rebuilt
    store.put_bytes(key, data, sha256=digest)
    assert store.size(key) == len(data)


def test_s3_server_killed_during_multipart_upload(
    moto_server_factory: Callable[..., MotoServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = moto_server_factory()
    store = s3_store(server, bucket=server.bucket, connect_timeout=1, read_timeout=5, max_attempts=2)
    data = os.urandom(16 * MiB)
    key, digest = blob(data)
    real_upload_part = store.client.upload_part
    parts_sent = []

    def upload_part(**kwargs: Any) -> Any:
        if parts_sent:
            server.kill()  # crash after the first part went through
        parts_sent.append(kwargs["PartNumber"])
        return real_upload_part(**kwargs)

    monkeypatch.setattr(store.client, "upload_part", upload_part)
    started = time.monotonic()
    with pytest.raises(StorageError):
        store.put_bytes(key, data, sha256=digest)
    assert time.monotonic() - started < 20
    assert parts_sent == [1, 2]
    server.start()
    assert not store.exists(key)  # (moto lost everything anyway; real S3 would show no object)


# --------------------------------------------------------------------------- local specifics


def test_local_files_are_read_only(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    data = unique()
    key, digest = blob(data)
    store.put_bytes(key, data, sha256=digest)
    mode = stat.S_IMODE((store.root / key).stat().st_mode)
    assert mode == 0o444


def test_local_disk_full_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "store")
    data = unique(10_000)
    key, digest = blob(data)

    def enospc(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", enospc)
    with pytest.raises(StorageError) as excinfo:
        store.put_bytes(key, data, sha256=digest)
    assert isinstance(excinfo.value.__cause__, OSError)
    assert excinfo.value.__cause__.errno == errno.ENOSPC
    assert not store.exists(key)
    assert temp_files(store) == []
    monkeypatch.undo()
    store.put_bytes(key, data, sha256=digest)  # works once there is space again
    assert store.exists(key)


def test_local_source_read_error_leaves_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    key, digest = blob(b"whatever")

    class Exploding:
        def __init__(self) -> None:
            self.calls = 0

        def read(self, n: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 1:
                raise OSError(errno.EIO, "I/O error")
            return b"partial"

    with pytest.raises(StorageError):
        store._put(key, Exploding(), sha256=digest, size=100)  # type: ignore[arg-type]
    assert not store.exists(key) and temp_files(store) == []


def test_local_ignores_temp_files_when_listing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    data = unique()
    key, digest = blob(data)
    store.put_bytes(key, data, sha256=digest)
    (store.root / key).parent.joinpath(".tmp-crashed-writer").write_bytes(b"junk")
    assert [k for k, _, _ in store.list_keys("")] == [key]


def test_check_key_keeps_local_paths_under_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    for key in ("blobs/sha256/ab/x", "objects/a-b_c.d"):
        check_key(key)
        assert store._path(key).is_relative_to(store.root)


# --------------------------------------------------------------------------- get_store


def test_get_store(tmp_path: Path, s3_server: MotoServer) -> None:
    common = dict(
        s3_endpoint_url=s3_server.endpoint_url,
        s3_bucket=s3_server.bucket,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        s3_region="us-east-1",
    )
    local = get_store(SimpleNamespace(store_backend="local", artifact_dir=tmp_path / "a", **common))
    assert isinstance(local, LocalStore) and local.root == (tmp_path / "a").resolve()
    s3 = get_store(SimpleNamespace(store_backend="s3", artifact_dir=None, **common))
    assert isinstance(s3, S3Store)
    s3.put_bytes("objects/gs", b"gs", sha256=sha(b"gs"))
    assert s3.exists("objects/gs")
    with pytest.raises(ValueError):
        get_store(SimpleNamespace(store_backend="ftp", artifact_dir=None, **common))


def test_s3_server_killed_while_streaming_a_download(
    moto_server_factory: Callable[..., MotoServer],
) -> None:
    server = moto_server_factory()
    store = s3_store(server, bucket=server.bucket, connect_timeout=1, read_timeout=5, max_attempts=2)
    data = os.urandom(64 * MiB)
    key, digest = blob(data)
    store.put_bytes(key, data, sha256=digest)
    started = time.monotonic()
    with pytest.raises(StorageError), store.open(key) as f:
        f.read(MiB)
        server.kill()
        while f.read(MiB):
            pass
    assert time.monotonic() - started < 20


def test_local_removes_stale_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    data = unique()
    key, digest = blob(data)
    store.put_bytes(key, data, sha256=digest)
    stale = (store.root / key).parent / ".tmp-killed-writer"
    fresh = (store.root / key).parent / ".tmp-live-writer"
    stale.write_bytes(b"junk")
    fresh.write_bytes(b"in progress")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert store.remove_stale_temp_files(older_than_s=3600) == 1
    assert not stale.exists() and fresh.exists() and store.exists(key)
