"""The hot read path (pull manifest, version list) on SQLite and a real PostgreSQL.

The pull manifest is one Core statement run outside any transaction (PostgreSQL: autocommit, no
pre-ping); these tests pin that it answers exactly what the ORM path answers for every way of
asking, that PostgreSQL really runs it without a transaction, and that a connection the server
dropped (what a PostgreSQL restart does to a pool) costs a retry, not an error.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from registry.db import read_scope, session_scope
from registry.errors import InvalidInput, NotFound
from registry.models import BaseModel
from registry.settings import Settings
from registry.tasks import service as tasks
from registry.versions import service
from tests.fixtures.stack import PG_ADMIN_URL, Stack, make_stack

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"], scope="module")
def st(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = make_stack(tmp_path_factory.mktemp(f"hot-{request.param}"), db=request.param)
    with session_scope(stack.settings) as s:
        bm = BaseModel(name="tiny", architecture="BertModel", model_type="bert", hidden_size=32, num_layers=2,
                       num_parameters=1000, weights_sha256="b" * 64)
        s.add(bm)
        task = tasks.create(s, name="sent", type="single_label", labels=["neg", "pos"])
        tasks.create(s, name="empty", type="single_label", labels=["neg", "pos"])
        for i in range(1, 5):
            service.register(s, task=task, base_model=bm, method="lora", method_config={"r": 8, "i": i},
                             files=[{"name": "adapter_model.safetensors", "size": i, "sha256": f"{i:064x}"}],
                             metrics={"accuracy": i / 10}, trainable_params=i, total_params=1000,
                             code_version="test", origin="imported")
        # v1: two aliases, v2: none, v3: one, v4 (latest): none
        service.set_alias(s, task, "staging", 1)
        service.set_alias(s, task, "production", 1)
        service.set_alias(s, task, "canary", 3)
    yield stack
    stack.stop()


def _orm_manifest(settings: Settings, task_name: str, **kw: Any) -> dict[str, Any]:
    with session_scope(settings, write=False) as s:
        task = tasks.get_by_name(s, task_name)
        v = service.resolve(s, task, **kw)
        return service.manifest(v, sorted(service.aliases_by_version(s, task.id).get(v.id, [])))


@pytest.mark.parametrize("ask", [{"alias": "production"}, {"alias": "staging"}, {"alias": "canary"},
                                 {"version": 1}, {"version": 2}, {"version": 3}, {"version": 4}, {}])
def test_fast_manifest_equals_the_orm_manifest(st: Stack, ask: dict[str, Any]) -> None:
    fast = read_scope(st.settings, lambda s: service.fast_manifest(s, "sent", **ask))
    assert fast is not None
    assert fast == _orm_manifest(st.settings, "sent", **ask)
    expected_aliases = {1: ["production", "staging"], 3: ["canary"]}.get(fast["version"], [])
    assert fast["aliases"] == expected_aliases
    if not ask:
        assert fast["version"] == 4  # latest


@pytest.mark.parametrize(("task", "ask", "error", "field"), [
    ("nope", {}, NotFound, "task"),
    ("empty", {}, NotFound, "task"),
    ("sent", {"alias": "nope"}, NotFound, "alias"),
    ("sent", {"version": 99}, NotFound, "version"),
    ("sent", {"alias": "../x"}, InvalidInput, "alias"),
])
def test_missing_things_fall_back_to_the_precise_error(st: Stack, task: str, ask: dict[str, Any],
                                                       error: type[Exception], field: str) -> None:
    assert read_scope(st.settings, lambda s: service.fast_manifest(s, task, **ask)) is None
    with pytest.raises(error) as exc:
        read_scope(st.settings, lambda s: service.pull_manifest(s, task, **ask))
    assert getattr(exc.value, "field", None) == field


def _pg_only(st: Stack) -> None:
    if st.settings.is_sqlite:
        pytest.skip("PostgreSQL only: SQLite is in-process, the read shares the main engine")


def test_postgres_hot_reads_run_outside_a_transaction(st: Stack) -> None:
    _pg_only(st)

    def two_statements(s: Session) -> tuple[Any, Any]:
        first = s.execute(text("SELECT now()")).scalar_one()
        time.sleep(0.02)
        second = s.execute(text("SELECT now()")).scalar_one()
        return first, second

    first, second = read_scope(st.settings, two_statements)
    # now() is the start of the transaction: inside one it would not move.
    assert second > first


def test_postgres_hot_read_survives_a_dropped_connection(st: Stack) -> None:
    _pg_only(st)
    import psycopg

    def pid(s: Session) -> int:
        return int(s.execute(text("SELECT pg_backend_pid()")).scalar_one())

    before = read_scope(st.settings, pid)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (before,))
        for _ in range(50):  # wait until the backend is really gone
            if admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (before,)).fetchone() == (0,):
                break
            time.sleep(0.05)
    # The pooled connection is dead; the read retries once on a fresh one and answers.
    manifest = read_scope(st.settings, lambda s: service.pull_manifest(s, "sent", alias="production"))
    assert manifest["version"] == 1
    assert read_scope(st.settings, pid) != before



def test_pool_exhaustion_is_a_503_not_a_500(tmp_path: Path) -> None:
    """Every pooled PostgreSQL connection busy past the pool timeout: the API answers 503
    problem+json with Retry-After (overload, retry), never a 500; the next request, once a
    connection is free again, succeeds."""
    from fastapi.testclient import TestClient

    from registry.api.app import create_app
    from registry.db import dispose_engines, get_engine

    st = make_stack(tmp_path, db="postgres", db_pool_size=1, db_max_overflow=0, db_pool_timeout_s=0.3,
                    hot_read_slots=1)
    try:
        dispose_engines()  # the engines are built from this stack's settings
        client = TestClient(create_app(st.settings))
        headers = st.headers()
        with get_engine(st.settings).connect() as held:  # the only connection of the main pool
            held.exec_driver_sql("SELECT 1")
            r = client.post("/api/tasks", json={"name": "t", "type": "single_label", "labels": ["a", "b"]},
                            headers=headers)
            assert r.status_code == 503, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.headers["retry-after"] == "1" and "busy" in r.json()["detail"]
        r = client.post("/api/tasks", json={"name": "t", "type": "single_label", "labels": ["a", "b"]},
                        headers=headers)
        assert r.status_code == 201, r.text
    finally:
        st.stop()
        dispose_engines()
