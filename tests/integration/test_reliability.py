"""Fault tests on real processes: `celery worker` subprocesses (prefork pool), a Redis server of the
test's own, SQLite/PostgreSQL, and a real tmpfs for a full disk.

The API is served in-process (``TestClient`` on ``create_app``) to save a process start per test;
every job runs in a real worker subprocess. Timeouts are small (heartbeat every 1 s, declared lost
after 4 s, reaper every 1 s) so every fault resolves within seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fixtures.s3 import free_port
from tests.fixtures.stack import TINY_DEV, TINY_TRAIN, Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

FAST_HP = {"epochs": 1, "batch_size": 16, "learning_rate": 5e-3, "max_length": 16, "seed": 1}
# Long enough to be caught mid-training, short enough to finish in seconds on a busy 2-core machine.
SLOW_HP = {"epochs": 8, "batch_size": 8, "learning_rate": 5e-3, "max_length": 16, "seed": 1}
FAULT = {"heartbeat_interval_s": 1, "heartbeat_timeout_s": 4, "reaper_interval_s": 1}
TERMINAL = {"succeeded", "failed", "cancelled"}


# ----------------------------------------------------------------------------------------- helpers


def api(st: Stack) -> TestClient:
    from registry.api.app import create_app

    client = TestClient(create_app(st.settings), raise_server_exceptions=False)
    client.headers.update(st.headers())
    return client


def setup_task(client: TestClient, base_dir: Path, tmp: Path, *, task: str = "sent") -> int:
    """Base model + task + dataset through the API; returns the dataset id."""
    if client.get("/api/base-models/tiny-bert").status_code == 404:
        files = [("files", (p.name, p.read_bytes(), "application/octet-stream"))
                 for p in sorted(base_dir.iterdir()) if p.is_file()]
        r = client.post("/api/base-models", data={"name": "tiny-bert"}, files=files)
        assert r.status_code == 201, r.text
    r = client.post("/api/tasks", json={"name": task, "type": "single_label", "labels": ["neg", "pos"]})
    assert r.status_code == 201, r.text
    r = client.post(f"/api/tasks/{task}/datasets",
                    data={"mapping": '{"text": "text", "label": "label", "has_header": true}'},
                    files={"train": ("train.tsv", TINY_TRAIN.encode()), "dev": ("dev.tsv", TINY_DEV.encode())})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def submit(client: TestClient, ds_id: int, hp: dict[str, Any] | None = None, *, task: str = "sent",
           key: str | None = None) -> dict[str, Any]:
    headers = {"Idempotency-Key": key} if key else {}
    r = client.post("/api/jobs", json={"task": task, "base_model": "tiny-bert", "dataset_id": ds_id,
                                       "hyperparameters": hp or FAST_HP}, headers=headers)
    assert r.status_code in (200, 202), r.text
    return dict(r.json())


def start_slow_job(st: Stack, base_dir: Path, tmp: Path) -> tuple[TestClient, dict[str, Any], Any, dict[str, Any]]:
    """Worker ``w1`` (prefork) training a slow job, caught mid-training: (client, job, w1, running job)."""
    client = api(st)
    ds = setup_task(client, base_dir, tmp)
    w1 = st.start_worker(pool="prefork", name="w1")
    j = submit(client, ds, SLOW_HP)
    running = wait_for(client, j["id"], lambda x: x["state"] == "running" and (x["progress"].get("step") or 0) > 0,
                       timeout=60, what="training progress")
    return client, j, w1, running


def job(client: TestClient, job_id: int) -> dict[str, Any]:
    r = client.get(f"/api/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_for(client: TestClient, job_id: int, pred: Callable[[dict[str, Any]], bool], *, timeout: float,
             what: str = "", diagnose: Callable[[], str] | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    j = job(client, job_id)
    while not pred(j):
        if time.monotonic() > deadline:
            brief = {k: v for k, v in j.items() if k not in ("progress", "hyperparameters", "method_config")}
            brief["step"] = j["progress"].get("step")
            extra = f"\n{diagnose()}" if diagnose else ""
            raise AssertionError(f"job {job_id}: timed out after {timeout}s waiting for {what}: {brief}{extra}")
        time.sleep(0.2)
        j = job(client, job_id)
    return j


def versions(client: TestClient, task: str = "sent") -> list[dict[str, Any]]:
    r = client.get(f"/api/tasks/{task}/versions")
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def pg_activity(st: Stack) -> list[tuple[Any, ...]]:
    """The test database's sessions: pid, state, transaction id (set once it wrote: it holds row
    locks), what it waits on, its last statement."""
    import psycopg

    url = st.settings.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT pid, state, backend_xid::text, wait_event_type, wait_event, left(query, 70) "
            "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchall()


def diagnostics(st: Stack, *workers: str) -> Callable[[], str]:
    """For a timed-out wait: the workers' log tails and, on PostgreSQL, who holds what."""

    def text() -> str:
        parts = [f"--- worker {w} log tail:\n{st.worker_log(w)[-3000:]}" for w in workers]
        if not st.settings.is_sqlite:
            try:
                parts.append(f"--- pg_stat_activity: {pg_activity(st)}")
            except Exception as exc:
                parts.append(f"--- pg_stat_activity failed: {exc!r}")
        return "\n".join(parts)

    return text


def signal_worker(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the worker's whole process group (main process + prefork children)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def kill_workers(st: Stack) -> None:
    """End of a fault test: SIGKILL the worker process groups (a warm shutdown after a training job
    can take the fixture's whole 20 s grace period, and these tests do not need one)."""
    for proc in st.procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(proc.pid) == proc.pid:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)


def scratch_dirs(st: Stack) -> list[Path]:
    assert st.settings.work_dir is not None
    return list(Path(st.settings.work_dir).glob("job-*"))


class RedisServer:
    """A redis-server of the test's own (the shared one on 6379 serves other tests)."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(self.tmp)],
            stdout=open(self.tmp / f"redis-{self.port}.log", "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if redis.Redis.from_url(self.url, socket_timeout=1).ping():
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # a crash: nothing is persisted (--save "" --appendonly no)
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


# ------------------------------------------------------------------------------------------- tests


def test_sigkill_worker_mid_training_requeues_then_succeeds(stack_factory: Any, tiny_bert: Path,
                                                            tmp_path: Path) -> None:
    """SIGKILL the whole worker (main process + prefork child) mid-training: within the heartbeat
    timeout the reaper (in the surviving worker's main process) requeues the job; the second worker
    trains it; exactly one version; attempts counted in the row."""
    st = stack_factory(**FAULT)
    client, j, w1, _ = start_slow_job(st, tiny_bert, tmp_path)
    signal_worker(w1, signal.SIGKILL)
    killed_at = time.monotonic()
    w1.wait(10)
    w2 = st.start_worker(pool="prefork", name="w2")
    requeued = wait_for(client, j["id"], lambda x: x["attempts"] >= 1 and x["state"] != "running" or
                        x["attempts"] >= 2, timeout=30, what="requeue")
    assert time.monotonic() - killed_at < 30
    final = wait_for(client, j["id"], lambda x: x["state"] in TERMINAL, timeout=120, what="terminal state")
    assert final["state"] == "succeeded", final
    assert final["attempts"] == 2, final
    assert any("heartbeat lost" in line for line in final["logs"]), final["logs"]
    assert [v["version"] for v in versions(client)] == [1]
    assert not scratch_dirs(st) or all(p.stat() for p in scratch_dirs(st))  # w1's scratch may remain
    log = st.worker_log("w2")
    assert f"reaper thread started in process {w2.pid}" in log, log[-2000:]  # the main process
    assert requeued["state"] in ("queued", "running", "succeeded")
    kill_workers(st)


def test_sigkill_of_the_pool_child_only(stack_factory: Any, tiny_bert: Path, tmp_path: Path) -> None:
    """SIGKILL only the prefork child running the job (what the OOM killer does). The main process
    rejects the message (reject-on-worker-lost) so it is redelivered; the redelivery finds the job
    still running under the dead lease and leaves it; the reaper thread of the *same* worker's main
    process declares the heartbeat lost and requeues; a fresh child trains it. One worker, one
    version, two attempts."""
    st = stack_factory(**FAULT)
    client, j, w1, running = start_slow_job(st, tiny_bert, tmp_path)
    from registry.db import session_scope
    from registry.models import Job

    with session_scope(st.settings, write=False) as session:
        row = session.get(Job, j["id"])
        assert row is not None and row.worker
        child = int(row.worker.rsplit(":", 1)[1])
    assert child != w1.pid and running["attempts"] == 1
    os.kill(child, signal.SIGKILL)
    final = wait_for(client, j["id"], lambda x: x["state"] in TERMINAL, timeout=120, what="terminal state")
    assert final["state"] == "succeeded" and final["attempts"] == 2, final["logs"]
    assert [v["version"] for v in versions(client)] == [1]
    log = st.worker_log("w1")
    assert "signal 9" in log or "WorkerLostError" in log, log[-3000:]
    assert w1.poll() is None  # the main process lived on and its reaper did the requeue
    kill_workers(st)


def test_redelivered_twin_registers_exactly_one_version(stack_factory: Any, tiny_bert: Path,
                                                        tmp_path: Path) -> None:
    """Worker 1 freezes mid-training (SIGSTOP: alive, holding its message, no heartbeats); the reaper
    fences it (lease token cleared) and requeues; worker 2 trains and registers. Worker 1 then thaws
    and carries on with a stale lease: it must register nothing. On PostgreSQL, where the lease check
    takes a real row lock."""
    st = stack_factory(db="postgres", **FAULT)
    client, j, w1, _ = start_slow_job(st, tiny_bert, tmp_path)
    signal_worker(w1, signal.SIGSTOP)
    try:
        st.start_worker(pool="prefork", name="w2")
        final = wait_for(client, j["id"], lambda x: x["state"] in TERMINAL, timeout=120, what="terminal state",
                         diagnose=diagnostics(st, "w2", "w1"))
    finally:
        signal_worker(w1, signal.SIGCONT)
    assert final["state"] == "succeeded" and final["attempts"] == 2, final["logs"]
    _assert_twin_registers_nothing(st, client, j["id"])
    kill_workers(st)


def _assert_twin_registers_nothing(st: Stack, client: TestClient, job_id: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the thawed twin notices its lost lease and stops
        log = st.worker_log("w1")
        if "lease lost" in log or "not registered" in log:
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"worker 1 never noticed its lost lease: {st.worker_log('w1')[-2000:]}")
    time.sleep(1)
    assert [v["version"] for v in versions(client)] == [1]
    assert job(client, job_id)["state"] == "succeeded"


def test_worker_frozen_inside_a_transaction_is_still_reaped(stack_factory: Any, tiny_bert: Path,
                                                             tmp_path: Path) -> None:
    """Worker 1 is SIGSTOPped at the worst moment: inside a transaction that updated the job row
    (heartbeat or progress write), so it holds the row lock and never commits. The reaper's
    ``SKIP LOCKED`` skips a locked row, so until the fix the job stayed ``running`` forever (the CI
    flake of the test above). PostgreSQL now ends a worker transaction idle for the heartbeat timeout,
    the lock goes, and worker 2's reaper requeues the job.

    To hit that moment every time, a trigger makes those UPDATEs take 0.2 s: the test sees one
    running and stops the worker; the UPDATE completes and the transaction stays open."""
    import psycopg

    st = stack_factory(db="postgres", **FAULT)
    url = st.settings.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION slow_job_write() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN PERFORM pg_sleep(0.2); RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER slow_job_write BEFORE UPDATE OF heartbeat_at, progress ON jobs "
                     "FOR EACH ROW EXECUTE FUNCTION slow_job_write()")
    client, j, w1, _ = start_slow_job(st, tiny_bert, tmp_path)

    deadline = time.monotonic() + 30
    while not any(r[1] == "active" and str(r[5]).startswith("UPDATE jobs") for r in pg_activity(st)):
        assert time.monotonic() < deadline, f"worker 1 wrote nothing to its job: {pg_activity(st)}"
    signal_worker(w1, signal.SIGSTOP)
    held: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + 5
    while not held and time.monotonic() < deadline:  # the UPDATE finishes; its transaction stays open
        held = [r for r in pg_activity(st) if r[1] == "idle in transaction" and r[2] is not None]
    assert held, f"worker 1 holds no open write transaction: {pg_activity(st)}"
    try:
        st.start_worker(pool="prefork", name="w2")
        final = wait_for(client, j["id"], lambda x: x["state"] in TERMINAL, timeout=120, what="terminal state",
                         diagnose=diagnostics(st, "w2", "w1"))
    finally:
        signal_worker(w1, signal.SIGCONT)
    assert final["state"] == "succeeded" and final["attempts"] == 2, (held, final["logs"])
    _assert_twin_registers_nothing(st, client, j["id"])
    kill_workers(st)


def test_cancel_queued_and_running_registers_nothing(stack_factory: Any, tiny_bert: Path, tmp_path: Path) -> None:
    st = stack_factory(**FAULT)
    client = api(st)
    ds = setup_task(client, tiny_bert, tmp_path)
    queued = submit(client, ds, FAST_HP)
    r = client.post(f"/api/jobs/{queued['id']}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert client.post(f"/api/jobs/{queued['id']}/cancel").status_code == 409  # already terminal
    st.start_worker(pool="prefork", name="w1")  # receives the cancelled job's message: skips it
    running = submit(client, ds, SLOW_HP)
    wait_for(client, running["id"], lambda x: x["state"] == "running" and (x["progress"].get("step") or 0) > 0,
             timeout=60, what="training progress")
    assert client.post(f"/api/jobs/{running['id']}/cancel").status_code == 200
    final = wait_for(client, running["id"], lambda x: x["state"] in TERMINAL, timeout=30, what="cancelled")
    assert final["state"] == "cancelled", final["logs"]
    assert job(client, queued["id"])["state"] == "cancelled"
    assert versions(client) == []
    assert scratch_dirs(st) == []
    kill_workers(st)


def test_idempotency_key(stack_factory: Any, tiny_bert: Path, tmp_path: Path) -> None:
    st = stack_factory()
    client = api(st)
    ds = setup_task(client, tiny_bert, tmp_path)
    first = submit(client, ds, FAST_HP, key="run-1")
    again = client.post("/api/jobs", json={"task": "sent", "base_model": "tiny-bert", "dataset_id": ds,
                                           "hyperparameters": FAST_HP}, headers={"Idempotency-Key": "run-1"})
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    other = client.post("/api/jobs", json={"task": "sent", "base_model": "tiny-bert", "dataset_id": ds,
                                           "hyperparameters": {**FAST_HP, "seed": 2}},
                        headers={"Idempotency-Key": "run-1"})
    assert other.status_code == 422, other.text
    assert other.headers["content-type"].startswith("application/problem+json")
    assert other.json()["field"] == "Idempotency-Key"
    bad = client.post("/api/jobs", json={"task": "sent", "base_model": "tiny-bert", "dataset_id": ds},
                      headers={"Idempotency-Key": "x" * 129})
    assert bad.status_code == 422
    assert [j["id"] for j in client.get("/api/jobs").json()["items"]] == [first["id"]]


def _tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode()[-200:]}")


def test_disk_full_in_worker_fails_job_and_cleans_up(stack_factory: Any, tiny_bert: Path, tmp_path: Path) -> None:
    """The worker's scratch space is a real 1 MiB tmpfs. The base model is cached there, the rest is
    filled up to two pages: the dataset still fits, writing the trained adapter hits ENOSPC. The
    job fails with a readable reason, temp files are removed, nothing is registered; once space is
    freed the same job resubmitted succeeds."""
    work = tmp_path / "work"
    _tmpfs(work, "1m")
    try:
        st = stack_factory(work_dir=str(work), **FAULT)
        client = api(st)
        ds = setup_task(client, tiny_bert, tmp_path)
        bm = client.get("/api/base-models/tiny-bert").json()
        cache = work / "base-models" / bm["weights_sha256"]  # what workers.execute._base_dir fills
        cache.mkdir(parents=True)
        for f in bm["files"]:
            (cache / f["name"]).write_bytes((tiny_bert / f["name"]).read_bytes())
        (cache / ".complete").write_text("tiny-bert")
        st.start_worker(pool="prefork", name="w1")
        stat = os.statvfs(work)
        filler = work / "filler"
        with open(filler, "wb") as f:
            f.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - 2 * 4096))
        j = submit(client, ds, FAST_HP)
        final = wait_for(client, j["id"], lambda x: x["state"] in TERMINAL, timeout=90, what="terminal state")
        assert final["state"] == "failed", final["logs"]
        assert final["error_code"] == "disk_full", final
        assert "disk" in final["error_message"]
        assert versions(client) == []
        assert scratch_dirs(st) == []
        assert not [p for p in work.rglob("*") if ".part" in p.name]
        filler.unlink()
        retry = submit(client, ds, FAST_HP)
        done = wait_for(client, retry["id"], lambda x: x["state"] in TERMINAL, timeout=90, what="terminal state")
        assert done["state"] == "succeeded", done["logs"]
        assert [v["version"] for v in versions(client)] == [1]
        kill_workers(st)
    finally:
        subprocess.run(["umount", "-l", str(work)], capture_output=True)


def _enqueued_at(st: Stack, job_id: int) -> Any:
    from registry.db import session_scope
    from registry.models import Job

    with session_scope(st.settings, write=False) as session:
        row = session.get(Job, job_id)
        assert row is not None
        return row.enqueued_at


def test_redis_down_at_submit_and_restarted_while_jobs_queued(stack_factory: Any, tiny_bert: Path,
                                                              tmp_path: Path, own_redis: RedisServer) -> None:
    """PostgreSQL, and a Redis of our own with no persistence (a restart loses every message).

    1. Redis is down when a job is submitted: the API still accepts it (the row is the truth), the
       failed send is recorded (enqueued_at NULL), and once Redis and a worker are up the reaper
       re-sends it. The worker's effective settings are read from the running worker.
    2. Redis is killed and restarted while one job runs and two are queued: the worker reconnects
       (celery#8091), the running job finishes, the lost messages are re-sent, and every accepted
       job reaches a terminal state with exactly one version each.
    """
    st = stack_factory(db="postgres", broker_url=own_redis.url, queued_resend_s=5, **FAULT)
    client = api(st)
    ds = setup_task(client, tiny_bert, tmp_path)

    t0 = time.monotonic()
    lost = submit(client, ds, FAST_HP)  # broker down
    assert lost["state"] == "queued"
    assert time.monotonic() - t0 < 30
    assert _enqueued_at(st, lost["id"]) is None  # the send failed and was recorded

    own_redis.start()
    st.start_worker(pool="prefork", name="w1")
    from celery import Celery

    probe = Celery("probe", broker=own_redis.url)
    confs = probe.control.inspect(timeout=5).conf() or {}
    assert confs, "the worker did not answer `inspect conf`"
    conf = next(iter(confs.values()))
    assert conf["broker_transport_options"]["visibility_timeout"] == st.settings.visibility_timeout_s
    assert conf["broker_transport_options"]["visibility_timeout"] > st.settings.max_job_seconds
    assert conf["task_acks_late"] is True and conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert f"channel visibility_timeout={st.settings.visibility_timeout_s}" in st.worker_log("w1")

    done = wait_for(client, lost["id"], lambda x: x["state"] in TERMINAL, timeout=90, what="re-sent job")
    assert done["state"] == "succeeded", done["logs"]

    jobs = [submit(client, ds, SLOW_HP), submit(client, ds, FAST_HP), submit(client, ds, FAST_HP)]
    wait_for(client, jobs[0]["id"], lambda x: x["state"] == "running", timeout=60, what="running")
    own_redis.stop()  # crash: queued messages and the running job's unacked message are gone
    time.sleep(2)
    own_redis.start()
    finals = [wait_for(client, j["id"], lambda x: x["state"] in TERMINAL, timeout=150, what="terminal state")
              for j in jobs]
    assert [f["state"] for f in finals] == ["succeeded"] * 3, [f["logs"] for f in finals]
    assert sorted(f["version"] for f in finals) == [2, 3, 4]
    assert len(versions(client)) == 4
    log = st.worker_log("w1")
    assert "Connection to broker lost" in log or "Cannot connect" in log, log[-3000:]
    kill_workers(st)


def _age_job(st: Stack, job_id: int, **values: Any) -> None:
    from sqlalchemy import update

    from registry.db import session_scope
    from registry.models import Job

    with session_scope(st.settings) as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_reaper_counts_attempts_fails_with_reason_and_resends_lost_messages(
        db: str, stack_factory: Any, tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reaper's decisions on real rows (no worker needed): stale heartbeat with attempts left ->
    queued and re-sent; attempts used up -> failed with a reason; cancel requested -> cancelled; a
    queued job whose send failed -> re-sent at once, one sent long ago -> re-sent; a young one -> left.
    Then the same pass as its own process (`python -m workers.reaper --once`, no celery beat)."""
    import sys
    from datetime import UTC, datetime, timedelta

    import registry.jobs.service as jobs_service
    from workers.reaper import reap_once

    st = stack_factory(db=db, **FAULT)
    client = api(st)
    ds = setup_task(client, tiny_bert, tmp_path)
    sent: list[int] = []
    monkeypatch.setattr(jobs_service, "send_training_job", lambda job_id, **_: sent.append(job_id))
    ids = [submit(client, ds, {**FAST_HP, "seed": i})["id"] for i in range(6)]
    sent.clear()
    old = datetime.now(UTC) - timedelta(hours=1)
    _age_job(st, ids[0], state="running", attempts=1, heartbeat_at=old, lease_token="a")
    _age_job(st, ids[1], state="running", attempts=3, heartbeat_at=old, lease_token="b")
    _age_job(st, ids[2], state="running", attempts=1, heartbeat_at=old, lease_token="c", cancel_requested=True)
    _age_job(st, ids[3], enqueued_at=None)
    _age_job(st, ids[4], enqueued_at=old)
    result = reap_once(st.settings)
    assert result == {"requeued": [ids[0]], "failed": [ids[1]], "resent": [ids[3], ids[4]]}
    assert sorted(sent) == [ids[0], ids[3], ids[4]]  # ids[5] is young and its message was sent
    states = {i: job(client, i) for i in ids}
    assert states[ids[0]]["state"] == "queued" and states[ids[0]]["attempts"] == 1
    assert states[ids[1]]["state"] == "failed" and states[ids[1]]["error_code"] == "worker_lost"
    assert "3 times" in states[ids[1]]["error_message"]
    assert states[ids[2]]["state"] == "cancelled"
    sent.clear()
    assert reap_once(st.settings) == {"requeued": [], "failed": [], "resent": []} and sent == []

    # The queue is at its limit of attempts: the next delivery fails the job instead of running it.
    from workers.execute import execute_job

    _age_job(st, ids[5], attempts=3)
    assert execute_job(ids[5], st.settings) == "failed"
    assert job(client, ids[5])["error_code"] == "too_many_attempts"

    _age_job(st, ids[0], state="running", attempts=2, heartbeat_at=old, lease_token="d")
    out = subprocess.run([sys.executable, "-m", "workers.reaper", "--once"], env=st.env, capture_output=True,
                         text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    assert job(client, ids[0])["state"] == "queued" and job(client, ids[0])["attempts"] == 2


def test_reaper_skips_a_row_locked_job_until_the_holders_idle_transaction_is_ended(
        stack_factory: Any, tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """In-process, no worker: a stale running job whose row is locked by a worker-side transaction
    left open (a frozen worker) is skipped by the reaper, which says so; with the worker setting
    (``set_idle_transaction_timeout``) PostgreSQL ends that transaction and the next pass requeues."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    import registry.jobs.service as jobs_service
    from registry.db import new_session, set_idle_transaction_timeout
    from registry.models import Job
    from workers.reaper import reap_once

    st = stack_factory(db="postgres", **FAULT)
    client = api(st)
    ds = setup_task(client, tiny_bert, tmp_path)
    monkeypatch.setattr(jobs_service, "send_training_job", lambda job_id, **_: None)
    job_id = submit(client, ds, FAST_HP)["id"]
    _age_job(st, job_id, state="running", attempts=1, lease_token="frozen",
             heartbeat_at=datetime.now(UTC) - timedelta(hours=1))
    set_idle_transaction_timeout(1.0)
    try:
        frozen = new_session(st.settings)
        frozen.execute(update(Job).where(Job.id == job_id).values(progress={"step": 1}))  # row lock, no commit
        with caplog.at_level("WARNING", logger="registry.jobs.service"):
            assert reap_once(st.settings)["requeued"] == []
        assert f"stale jobs [{job_id}] are row-locked" in caplog.text
        time.sleep(2.0)  # past the idle timeout: the server ends the frozen session
        assert reap_once(st.settings)["requeued"] == [job_id]
        with contextlib.suppress(Exception):
            frozen.close()
    finally:
        set_idle_transaction_timeout(None)
    assert job(client, job_id)["state"] == "queued"


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_migrations_reach_the_models(db: str, stack_factory: Any) -> None:
    """`alembic upgrade head` (run by make_stack) on a fresh database, then `alembic check`: the
    migrations (enqueued_at included) produce exactly the schema of registry.models."""
    from alembic import command

    from registry.migrate import alembic_config

    st = stack_factory(db=db)
    command.check(alembic_config(st.settings))
