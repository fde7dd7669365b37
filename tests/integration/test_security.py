"""Authentication and authorisation, walked over every route of the app; tokens with scopes and
namespaces; production refuses default credentials; presigned URLs; per-token submit rate limit."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests.integration.test_reliability import FAST_HP, setup_task

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PARAMS = {"name": "sent", "number": "1", "job_id": "1", "dataset_id": "1", "alias": "prod",
          "sha256": "0" * 64, "rest": "/adapter_model.safetensors"}
READ_METHODS = {"GET", "HEAD", "OPTIONS"}
# Routes that must answer without credentials: the health check, and how a browser signs in.
OPEN = {("GET", "/healthz"), ("POST", "/login"), ("POST", "/logout"), ("GET", "/login")}


def _flatten(routes: list[Any], prefix: str = "") -> list[tuple[str, APIRoute]]:
    out: list[tuple[str, APIRoute]] = []
    for route in routes:
        if isinstance(route, APIRoute):
            out.append((prefix + route.path, route))
        elif hasattr(route, "original_router"):  # FastAPI >= 0.16x keeps included routers nested
            out += _flatten(route.original_router.routes, prefix + route.include_context.prefix)
    return out


def _routes(app: Any) -> list[tuple[str, str]]:
    out = []
    for raw, route in _flatten(app.routes):
        path = re.sub(r"{(\w+)(?::\w+)?}", lambda m: PARAMS.get(m.group(1), "x"), raw)
        for method in sorted(route.methods):
            out.append((method, path))
    return out


def _client(st: Any, token: str | None = None) -> TestClient:
    from registry.api.app import create_app

    c = TestClient(create_app(st.settings), raise_server_exceptions=False, follow_redirects=False)
    if token:
        c.headers["Authorization"] = f"Bearer {token}"
    return c


def _token(admin: TestClient, name: str, scopes: list[str], prefixes: list[str] | None = None) -> str:
    r = admin.post("/api/tokens", json={"name": name, "scopes": scopes, "prefixes": prefixes or []})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def _call(c: TestClient, method: str, path: str) -> Any:
    return c.request(method, path, json={} if method not in READ_METHODS else None)


@pytest.mark.parametrize("public_reads", [True, False])
def test_every_route_needs_the_right_token(public_reads: bool, stack_factory: Any) -> None:
    st = stack_factory(public_reads=str(public_reads).lower())
    admin = _client(st, st.token)
    read_tok = _token(admin, "reader", ["read"])
    write_tok = _token(admin, "writer", ["write"])
    anonymous, reader, writer = _client(st), _client(st, read_tok), _client(st, write_tok)
    routes = _routes(admin.app)
    assert len(routes) > 20
    api_writes = [(m, p) for m, p in routes if m not in READ_METHODS and p.startswith("/api/")]
    assert api_writes, routes
    checked = 0
    for method, path in routes:
        if (method, path) in OPEN:
            continue
        is_write = method not in READ_METHODS
        r = _call(anonymous, method, path)
        if is_write or (not public_reads and path.startswith("/api/")):
            assert r.status_code == 401 if path.startswith("/api/") else r.status_code in (401, 403), \
                (method, path, r.status_code, r.text[:300])
            if path.startswith("/api/"):
                assert r.headers.get("www-authenticate", "").startswith("Bearer"), (method, path)
                assert r.headers["content-type"].startswith("application/problem+json")
            checked += 1
        else:
            assert r.status_code != 401, (method, path, r.text[:300])
        if is_write and path.startswith("/api/"):
            r = _call(reader, method, path)
            assert r.status_code == 403, (method, path, r.status_code, r.text[:300])
            assert r.headers["content-type"].startswith("application/problem+json")
        if path == "/api/tokens":
            assert _call(writer, method, path).status_code == 403  # admin only
        if not is_write and path.startswith("/api/"):
            assert _call(reader, method, path).status_code not in (401, 403), (method, path)
    assert checked >= len(api_writes)
    bad = _client(st, "not-a-token")
    r = bad.post("/api/tasks", json={"name": "x"})
    assert r.status_code == 401 and "Bearer" in r.headers["www-authenticate"]
    r = anonymous.post("/api/tasks", json={"name": "x"}, headers={"Authorization": "Basic abc"})
    assert r.status_code == 401


def test_namespaces_limit_a_token_to_task_prefixes(stack_factory: Any, tiny_bert: Path, tmp_path: Path) -> None:
    st = stack_factory()
    admin = _client(st, st.token)
    team_a = _client(st, _token(admin, "team-a", ["write"], ["team-a-"]))
    assert team_a.post("/api/tasks", json={"name": "team-a-sent", "labels": ["neg", "pos"]}).status_code == 201
    r = team_a.post("/api/tasks", json={"name": "team-b-sent", "labels": ["neg", "pos"]})
    assert r.status_code == 403 and "team-b-sent" in r.json()["detail"]
    ds = setup_task(admin, tiny_bert, tmp_path, task="other")
    r = team_a.post("/api/jobs", json={"task": "other", "base_model": "tiny-bert", "dataset_id": ds})
    assert r.status_code == 403
    r = team_a.put("/api/tasks/other/aliases/prod", json={"version": 1})
    assert r.status_code == 403


def test_submit_rate_limit_per_token(stack_factory: Any, tiny_bert: Path, tmp_path: Path) -> None:
    from registry.api import ratelimit

    st = stack_factory(submit_rate_per_minute=2)  # a fresh stack starts with an empty window
    admin = _client(st, st.token)
    ds = setup_task(admin, tiny_bert, tmp_path)
    other = _client(st, _token(admin, "other", ["write"]))
    body = {"task": "sent", "base_model": "tiny-bert", "dataset_id": ds, "hyperparameters": FAST_HP}
    assert [admin.post("/api/jobs", json=body).status_code for _ in range(2)] == [202, 202]
    r = admin.post("/api/jobs", json=body)
    assert r.status_code == 429, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert other.post("/api/jobs", json=body).status_code == 202  # another token has its own budget
    ratelimit.reset()


def test_production_mode_has_no_default_credentials(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from registry.settings import Settings

    pg = "postgresql://u@db/registry"
    with pytest.raises(ValidationError, match="ADMIN_TOKEN"):
        Settings(mode="production", home=tmp_path, database_url=pg)
    with pytest.raises(ValidationError, match="ADMIN_TOKEN"):
        Settings(mode="production", home=tmp_path, database_url=pg, admin_token="short")
    with pytest.raises(ValidationError, match="PostgreSQL"):
        Settings(mode="production", home=tmp_path, admin_token="x" * 32)
    ok = Settings(mode="production", home=tmp_path, database_url=pg, admin_token="x" * 32)
    assert ok.admin_token == "x" * 32
    assert not (tmp_path / "admin-token").exists()  # production never generates one
    # The embedded default generates one, private to its owner, stable across restarts.
    emb = Settings(home=tmp_path / "emb")
    tok = emb.embedded_admin_token()
    assert tok.startswith("ar_") and len(tok) > 30
    assert (tmp_path / "emb" / "admin-token").stat().st_mode & 0o077 == 0
    assert Settings(home=tmp_path / "emb").embedded_admin_token() == tok


def test_presigned_urls_are_get_only_one_object_and_short_lived(stack_factory: Any, s3_server: Any) -> None:
    import httpx

    from registry.hashing import sha256_bytes
    from registry.storage import get_store
    from registry.storage.keys import blob_key

    st = stack_factory(store="s3", s3=s3_server, presign_expires_s=120)
    data = b"adapter bytes"
    sha = sha256_bytes(data)
    get_store(st.settings).put_bytes(blob_key(sha), data, sha256=sha)
    c = _client(st)
    r = c.get(f"/api/blobs/{sha}")
    assert r.status_code == 307
    url = urlparse(r.headers["location"])
    q = parse_qs(url.query)
    assert url.path.endswith("/" + blob_key(sha)) and "prefix" not in q  # exactly this object
    assert q["X-Amz-Expires"] == ["120"] and q["X-Amz-SignedHeaders"] == ["host"]
    assert httpx.get(r.headers["location"]).content == data
    # GET-only: SigV4 signs the method; the same URL signed for PUT differs.
    store: Any = get_store(st.settings)
    put_url = store.client.generate_presigned_url("put_object", Params={"Bucket": st.settings.s3_bucket,
                                                                        "Key": blob_key(sha)}, ExpiresIn=120)
    assert parse_qs(urlparse(put_url).query)["X-Amz-Signature"] != q["X-Amz-Signature"]
    with pytest.raises(ValueError):
        store.presigned_url(blob_key(sha), 8 * 24 * 3600)
    from pydantic import ValidationError

    from registry.settings import Settings

    with pytest.raises(ValidationError):
        Settings(home=st.home, presign_expires_s=7200)  # at most an hour
