#!/usr/bin/env python
"""Registry vs MLflow model registry, side by side on one machine, with one client.

    # MLflow lives in its own venv (never a project dependency):
    python -m venv /tmp/mlflow-venv && /tmp/mlflow-venv/bin/pip install mlflow psycopg2-binary
    .venv/bin/python bench/mlflow_compare.py --backend sqlite --out bench/results-sqlite.json
    .venv/bin/python bench/mlflow_compare.py --backend postgresql --scale --out bench/results-pg.json

What it does, per backend (SQLite file or a fresh PostgreSQL database for each server):

1. starts ``mlflow server`` (default workers, ``--serve-artifacts``) and ours (``adapter-registry
   serve``, ``--workers`` default 2 for 2 cores: one SO_REUSEPORT socket each, uvloop + httptools)
   on loopback;
2. seeds 1,000 versions over 100 names/tasks in each, with a unique 1 MiB artifact per version
   (MLflow: run + artifact PUT + model-versions/create, exactly what its client does; ours: the
   import endpoint with a 1 MiB LoRA adapter), and points alias ``production`` at one version;
3. times four operations at 1, 8 and 50 concurrent clients with the same raw-socket HTTP/1.1
   client (asyncio, kept-alive connections): resolve a version by alias, list the versions of one
   name, download a 1 MiB artifact, register a version with its 1 MiB artifact. MLflow is measured
   twice: as a kept-alive client sees it, and as server capacity (the client sets TCP_QUICKACK on
   every receive, so MLflow's split header/body writes are not held up by delayed ACKs);
4. records req/s, p50, p99 and the CPU seconds the server processes used (psutil, all children);
5. with ``--scale``: stops both servers, copies our database and bulk-inserts into the copy until it
   holds 100,000 versions over 10,000 tasks (SQLAlchemy core inserts, not timed), serves the
   1,000- and the 100,000-version databases side by side and measures resolve and list on them
   alternately, 3 runs per cell, latencies pooled (``scale_paired``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MLFLOW_BIN = os.environ.get("MLFLOW_BIN", "/tmp/mlflow-venv/bin/mlflow")
PG_ADMIN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
MIB = 1024 * 1024
HIDDEN, LAYERS, RANK = 256, 4, 64  # LoRA r=64 on query+value of 4 layers: 8 x 128 KiB = 1 MiB


# ==================================================================================================
# A small raw-socket HTTP/1.1 client (asyncio protocol): kept-alive, optional TCP_QUICKACK on every
# receive, or a fresh connection per request. The same code drives both servers.
# ==================================================================================================
class _Proto(asyncio.Protocol):
    def __init__(self, quickack: bool) -> None:
        self.buf = bytearray()
        self.quickack = quickack
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.sock: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.sock = transport.get_extra_info("socket")
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.quickack:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    def data_received(self, data: bytes) -> None:
        if self.quickack:  # re-arm after every receive: Linux falls back to delayed ACKs otherwise
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        self.buf += data
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait(self) -> None:
        if self.closed:
            raise ConnectionError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        await self.waiter
        self.waiter = None


class Conn:
    def __init__(self, host: str, port: int, *, quickack: bool = False, fresh: bool = False) -> None:
        self.host, self.port, self.quickack, self.fresh = host, port, quickack, fresh
        self.proto: _Proto | None = None

    async def _connect(self) -> _Proto:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: _Proto(self.quickack), self.host, self.port)
        return proto

    def close(self) -> None:
        if self.proto is not None:
            self.proto.transport.close()
            self.proto = None

    async def request(self, method: str, path: str, *, body: bytes = b"",
                      headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        if self.proto is None or self.proto.closed or self.fresh:
            self.close()
            self.proto = await self._connect()
        p = self.proto
        hdrs = {"Host": f"{self.host}:{self.port}", **(headers or {})}
        if body or method in ("POST", "PUT", "PATCH"):
            hdrs["Content-Length"] = str(len(body))
        if self.fresh:
            hdrs["Connection"] = "close"
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        p.transport.write(head.encode() + body)  # type: ignore[attr-defined]
        while (end := p.buf.find(b"\r\n\r\n")) < 0:
            await p.wait()
        raw_head = bytes(p.buf[:end])
        del p.buf[: end + 4]
        lines = raw_head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        rh: dict[bytes, bytes] = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            rh[k.strip().lower()] = v.strip()
        if b"content-length" in rh:
            n = int(rh[b"content-length"])
            while len(p.buf) < n:
                await p.wait()
            data = bytes(p.buf[:n])
            del p.buf[:n]
        elif rh.get(b"transfer-encoding", b"").lower() == b"chunked":
            out = bytearray()
            while True:
                while (e := p.buf.find(b"\r\n")) < 0:
                    await p.wait()
                size = int(bytes(p.buf[:e]).split(b";")[0], 16)
                del p.buf[: e + 2]
                while len(p.buf) < size + 2:
                    await p.wait()
                out += p.buf[:size]
                del p.buf[: size + 2]
                if size == 0:
                    break
            data = bytes(out)
        else:
            while not p.closed:
                await p.wait()
            data = bytes(p.buf)
            p.buf.clear()
        if self.fresh or rh.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, data


# ==================================================================================================
# Payloads
# ==================================================================================================
def safetensors_bytes(tensors: dict[str, tuple[int, ...]]) -> bytes:
    header: dict[str, Any] = {}
    off = 0
    for name, shape in tensors.items():
        n = 4
        for d in shape:
            n *= d
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + os.urandom(off)


def base_model_files() -> dict[str, bytes]:
    config = {"model_type": "bert", "architectures": ["BertModel"], "hidden_size": HIDDEN,
              "num_hidden_layers": LAYERS, "num_attention_heads": 4, "intermediate_size": 4 * HIDDEN,
              "vocab_size": 128}
    tensors: dict[str, tuple[int, ...]] = {"embeddings.word_embeddings.weight": (128, HIDDEN)}
    for i in range(LAYERS):
        for t in ("query", "key", "value"):
            tensors[f"encoder.layer.{i}.attention.self.{t}.weight"] = (HIDDEN, HIDDEN)
    return {"config.json": json.dumps(config).encode(), "model.safetensors": safetensors_bytes(tensors)}


class AdapterTemplate:
    """A 1 MiB LoRA adapter; each ``next()`` differs (a counter in the first tensor bytes)."""

    def __init__(self) -> None:
        tensors: dict[str, tuple[int, ...]] = {}
        for i in range(LAYERS):
            for t in ("query", "value"):
                pre = f"base_model.model.encoder.layer.{i}.attention.self.{t}"
                tensors[f"{pre}.lora_A.weight"] = (RANK, HIDDEN)
                tensors[f"{pre}.lora_B.weight"] = (HIDDEN, RANK)
        self.weights = bytearray(safetensors_bytes(tensors))
        (hlen,) = struct.unpack("<Q", self.weights[:8])
        self.data_start = 8 + hlen
        self.head = safetensors_bytes({"weight": (2, HIDDEN), "bias": (2,)})
        self.config = json.dumps({"peft_type": "LORA", "r": RANK, "lora_alpha": 16,
                                  "target_modules": ["query", "value"]}).encode()
        self.counter = 0
        self.boundary = "benchboundary" + uuid.uuid4().hex

    def next_weights(self) -> bytes:
        self.counter += 1
        struct.pack_into("<Q", self.weights, self.data_start, self.counter)
        struct.pack_into("<Q", self.weights, self.data_start + 8, os.getpid())
        return bytes(self.weights)

    def multipart(self) -> tuple[bytes, str]:
        b = self.boundary
        parts = [f'--{b}\r\nContent-Disposition: form-data; name="base_model"\r\n\r\nbench-base\r\n'.encode()]
        for name, data in (("adapter_config.json", self.config), ("adapter_model.safetensors", self.next_weights()),
                           ("head.safetensors", self.head)):
            parts.append(f'--{b}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                         f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
        parts.append(f"--{b}--\r\n".encode())
        return b"".join(parts), f"multipart/form-data; boundary={b}"


def blob_1mib() -> bytes:
    data = bytearray(os.urandom(MIB))
    struct.pack_into("<Q", data, 0, time.time_ns())
    return bytes(data)


# ==================================================================================================
# Servers
# ==================================================================================================
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def cpu_seconds(self) -> float:
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0.0
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def wait_http(port: int, path: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server did not start: {log.read_text()[-3000:]}")


def start_mlflow(work: Path, backend_uri: str) -> Server:
    port = free_port()
    log = work / "mlflow.log"
    proc = subprocess.Popen(
        [MLFLOW_BIN, "server", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri", backend_uri,
         "--serve-artifacts", "--artifacts-destination", str(work / "mlartifacts")],
        cwd=work, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,  # noqa: SIM115
    )
    wait_http(port, "/health", proc, log)
    return Server("mlflow", proc, port, log)


def start_ours(work: Path, database_url: str, token: str, workers: int, tag: str = "ours",
               extra_env: dict[str, str] | None = None) -> Server:
    from registry.migrate import upgrade
    from registry.settings import Settings

    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update({"REGISTRY_HOME": str(work / "home"), "REGISTRY_DATABASE_URL": database_url,
                "REGISTRY_ADMIN_TOKEN": token, "PYTHONPATH": str(ROOT), **(extra_env or {})})
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith("REGISTRY_")})
    try:
        settings = Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    settings.ensure_dirs()
    upgrade(settings)
    port = free_port()
    log = work / f"{tag}.log"
    proc = subprocess.Popen(
        # The production entry point: N processes with one SO_REUSEPORT socket each (uvloop and
        # httptools are picked automatically when installed, as they are with uvicorn[standard]).
        [sys.executable, "-m", "registry.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), "--no-access-log"],
        cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,  # noqa: SIM115
    )
    wait_http(port, "/healthz", proc, log)
    return Server("ours", proc, port, log)


# ==================================================================================================
# The two targets: the same four operations
# ==================================================================================================
Op = Callable[[Conn], Awaitable[bool]]


@dataclass
class Target:
    label: str
    server: Server
    names: list[str]
    artifacts: list[str] = field(default_factory=list)  # download paths
    quickack: bool = False

    def conn(self) -> Conn:
        return Conn("127.0.0.1", self.server.port, quickack=self.quickack)


class MLflowTarget(Target):
    async def create_name(self, c: Conn, name: str) -> None:
        s, b = await c.request("POST", "/api/2.0/mlflow/registered-models/create",
                               body=json.dumps({"name": name}).encode(),
                               headers={"Content-Type": "application/json"})
        assert s == 200, b[:300]

    async def register(self, c: Conn, name: str | None = None) -> bool:
        name = name or random.choice(self.names)
        s, b = await c.request("POST", "/api/2.0/mlflow/runs/create", body=b'{"experiment_id": "0"}',
                               headers={"Content-Type": "application/json"})
        if s != 200:
            return False
        info = json.loads(b)["run"]["info"]
        run_id, art = info["run_id"], info["artifact_uri"]
        path = art.removeprefix("mlflow-artifacts:/") + "/model/model.safetensors"
        s, b = await c.request("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{path}", body=blob_1mib())
        if s != 200:
            return False
        s, b = await c.request("POST", "/api/2.0/mlflow/model-versions/create",
                               body=json.dumps({"name": name, "source": f"{art}/model", "run_id": run_id}).encode(),
                               headers={"Content-Type": "application/json"})
        if s == 200:
            self.artifacts.append(f"/api/2.0/mlflow-artifacts/artifacts/{path}")
        return s == 200

    async def set_alias(self, c: Conn, name: str, version: int) -> None:
        s, b = await c.request("POST", "/api/2.0/mlflow/registered-models/alias",
                               body=json.dumps({"name": name, "alias": "production",
                                                "version": str(version)}).encode(),
                               headers={"Content-Type": "application/json"})
        assert s == 200, b[:300]

    async def resolve(self, c: Conn) -> bool:
        s, _ = await c.request("GET", "/api/2.0/mlflow/registered-models/alias?name="
                               f"{random.choice(self.names)}&alias=production")
        return s == 200

    async def list_versions(self, c: Conn) -> bool:
        s, _ = await c.request("GET", "/api/2.0/mlflow/model-versions/search?filter=name%3D%27"
                               f"{random.choice(self.names)}%27&max_results=50")
        return s == 200

    async def download(self, c: Conn) -> bool:
        s, b = await c.request("GET", random.choice(self.artifacts))
        return s == 200 and len(b) == MIB


class OursTarget(Target):
    token: str = ""
    template: AdapterTemplate | None = None

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def create_name(self, c: Conn, name: str) -> None:
        s, b = await c.request("POST", "/api/tasks", body=json.dumps({"name": name, "type": "single_label",
                                                                      "labels": ["neg", "pos"]}).encode(),
                               headers={"Content-Type": "application/json", **self.auth()})
        assert s == 201, b[:300]

    async def register(self, c: Conn, name: str | None = None) -> bool:
        assert self.template is not None
        name = name or random.choice(self.names)
        body, ctype = self.template.multipart()
        s, b = await c.request("POST", f"/api/tasks/{name}/versions/import", body=body,
                               headers={"Content-Type": ctype, **self.auth()})
        if s == 201:
            sha = next(f["sha256"] for f in json.loads(b)["files"] if f["name"] == "adapter_model.safetensors")
            self.artifacts.append(f"/api/blobs/{sha}")
        return s == 201

    async def set_alias(self, c: Conn, name: str, version: int) -> None:
        s, b = await c.request("PUT", f"/api/tasks/{name}/aliases/production",
                               body=json.dumps({"version": version}).encode(),
                               headers={"Content-Type": "application/json", **self.auth()})
        assert s == 200, b[:300]

    async def resolve(self, c: Conn) -> bool:
        s, _ = await c.request("GET", f"/api/tasks/{random.choice(self.names)}/adapter?alias=production")
        return s == 200

    async def list_versions(self, c: Conn) -> bool:
        s, _ = await c.request("GET", f"/api/tasks/{random.choice(self.names)}/versions?limit=50")
        return s == 200

    async def download(self, c: Conn) -> bool:
        s, b = await c.request("GET", random.choice(self.artifacts))
        return s == 200 and len(b) > MIB


async def seed(t: Target, names: list[str], per_name: int, conc: int = 8) -> float:
    t0 = time.perf_counter()
    c0 = t.conn()
    for n in names:
        await t.create_name(c0, n)  # type: ignore[attr-defined]
    queue = [n for n in names for _ in range(per_name)]
    random.shuffle(queue)

    async def worker() -> None:
        c = t.conn()
        while queue:
            n = queue.pop()
            for _ in range(3):
                if await t.register(c, n):  # type: ignore[attr-defined]
                    break
            else:
                raise RuntimeError(f"{t.label}: could not register a version of {n}")
        c.close()

    await asyncio.gather(*(worker() for _ in range(conc)))
    for n in names:
        await t.set_alias(c0, n, per_name // 2)  # type: ignore[attr-defined]
    c0.close()
    return time.perf_counter() - t0


# ==================================================================================================
# Load phases
# ==================================================================================================
def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


async def phase(t: Target, op_name: str, conc: int, duration: float, warmup: float,
                keep_latencies: bool = False) -> dict[str, Any]:
    op: Op = getattr(t, op_name)
    conns = [t.conn() for _ in range(conc)]
    lat: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + warmup
    stop = measure_from + duration
    cpu0: float | None = None

    async def worker(c: Conn) -> None:
        nonlocal errors
        while loop.time() < stop:
            t0 = time.perf_counter()
            try:
                ok = await op(c)
            except (ConnectionError, OSError):
                ok = False
                c.close()
            dt = time.perf_counter() - t0
            if loop.time() >= measure_from and loop.time() <= stop:
                lat.append(dt)
                errors += 0 if ok else 1

    async def cpu_sampler() -> None:
        nonlocal cpu0
        await asyncio.sleep(warmup)
        cpu0 = t.server.cpu_seconds()

    await asyncio.gather(cpu_sampler(), *(worker(c) for c in conns))
    cpu1 = t.server.cpu_seconds()
    for c in conns:
        c.close()
    n = len(lat)
    out = {"target": t.label, "op": op_name, "clients": conc, "requests": n, "errors": errors,
           "rps": n / duration, "p50_ms": 1000 * pct(lat, 0.5), "p99_ms": 1000 * pct(lat, 0.99),
           "server_cpu_s": (cpu1 - (cpu0 or cpu1)), "duration_s": duration,
           "cpu_ms_per_req": 1000 * (cpu1 - (cpu0 or cpu1)) / n if n else float("nan")}
    if keep_latencies:
        out["latencies"] = lat
    return out


async def scale_paired(small: Target, big: Target, concs: list[int], duration: float, warmup: float,
                       repeats: int) -> list[dict[str, Any]]:
    """1,000 vs 100,000 versions, both servers up at once and measured alternately (small, big, big,
    small, ...) ``repeats`` times per cell, latencies pooled over the repeats: a drift in the
    machine's speed, or a lucky split of the connections over the API processes in one 4-second
    run, then hits both sides alike instead of deciding the ratio."""
    out: list[dict[str, Any]] = []
    for op in ("resolve", "list_versions"):
        for conc in concs:
            runs: dict[str, list[dict[str, Any]]] = {small.label: [], big.label: []}
            for rep in range(repeats):
                for t in (small, big) if rep % 2 == 0 else (big, small):
                    runs[t.label].append(await phase(t, op, conc, duration, warmup, keep_latencies=True))
            for t in (small, big):
                mine = runs[t.label]
                lat = [x for run in mine for x in run.pop("latencies")]
                n, secs = len(lat), duration * repeats
                cpu = sum(run["server_cpu_s"] for run in mine)
                r = {"target": t.label, "op": op, "clients": conc, "requests": n, "repeats": repeats,
                     "errors": sum(run["errors"] for run in mine), "rps": n / secs,
                     "p50_ms": 1000 * pct(lat, 0.5), "p99_ms": 1000 * pct(lat, 0.99), "server_cpu_s": cpu,
                     "duration_s": secs, "cpu_ms_per_req": 1000 * cpu / n if n else float("nan"),
                     "p99_ms_per_repeat": [round(run["p99_ms"], 2) for run in mine]}
                out.append(r)
                print(f"  {t.label:<18} {op:<14} c={conc:<3} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                      f"p99 {r['p99_ms']:8.2f} ms  (per repeat {r['p99_ms_per_repeat']})  err {r['errors']}",
                      flush=True)
    return out


async def run_matrix(targets: list[Target], ops: list[str], concs: list[int], duration: float,
                     warmup: float, results: list[dict[str, Any]]) -> None:
    for op in ops:
        for conc in concs:
            for t in targets:
                d = duration if op != "register" else max(duration, 4.0)
                r = await phase(t, op, conc, d, warmup)
                results.append(r)
                print(f"  {t.label:<18} {op:<14} c={conc:<3} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                      f"p99 {r['p99_ms']:8.2f} ms  cpu {r['server_cpu_s']:5.2f}s  err {r['errors']}", flush=True)


# ==================================================================================================
# Scale: bulk rows straight into our database
# ==================================================================================================
def bulk_scale(database_url: str, total_tasks: int, per_task: int) -> float:
    from sqlalchemy import create_engine, func, insert, select

    from registry.models import AdapterVersion, Alias, BaseModel, Task

    url = database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url)
    t0 = time.perf_counter()
    with engine.begin() as conn:
        existing = int(conn.scalar(select(func.count(Task.id))) or 0)
        bm_id, bm_sha = conn.execute(select(BaseModel.id, BaseModel.weights_sha256)).one()
        files = conn.scalar(select(AdapterVersion.files).limit(1))
        now = time.time()
        from datetime import UTC, datetime

        ts = datetime.fromtimestamp(now, UTC)
        new = [f"s{i:05d}" for i in range(total_tasks - existing)]
        for start in range(0, len(new), 2000):
            chunk = new[start:start + 2000]
            conn.execute(insert(Task), [{"name": n, "type": "single_label", "labels": ["neg", "pos"],
                                         "description": "", "tags": [], "next_version": per_task,
                                         "created_by": "bench", "created_at": ts} for n in chunk])
            ids = dict(conn.execute(select(Task.name, Task.id).where(Task.name.in_(chunk))).all())
            rows = [{"task_id": ids[n], "number": k, "origin": "imported", "method": "lora",
                     "method_config": {"r": RANK}, "hyperparameters": {}, "task_type": "single_label",
                     "labels": ["neg", "pos"], "base_model_id": bm_id, "base_model_sha256": bm_sha,
                     "metrics": {}, "trainable_params": 1, "total_params": 2, "trainable_share": 0.5,
                     "files": files, "size_bytes": MIB, "code_version": "bench", "created_by": "bench",
                     "created_at": ts, "description": "", "tags": []}
                    for n in chunk for k in range(1, per_task + 1)]
            conn.execute(insert(AdapterVersion), rows)
            vids = conn.execute(select(AdapterVersion.task_id, AdapterVersion.id)
                                .where(AdapterVersion.task_id.in_(list(ids.values())),
                                       AdapterVersion.number == per_task // 2)).all()
            conn.execute(insert(Alias), [{"task_id": tid, "name": "production", "version_id": vid,
                                          "updated_by": "bench", "updated_at": ts} for tid, vid in vids])
    analyze(database_url)
    with engine.begin() as conn:
        n = conn.scalar(select(func.count(AdapterVersion.id)))
    engine.dispose()
    print(f"  scale: {n} versions in the database ({time.perf_counter() - t0:.1f} s to insert)")
    return time.perf_counter() - t0


# ==================================================================================================
def analyze(database_url: str) -> None:
    """Fresh planner statistics (both backends): the 1,000- and 100,000-version databases of the
    scale comparison are analysed alike, so neither side is measured on stale plans."""
    from sqlalchemy import create_engine

    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def db_copy(url: str, work: Path) -> str:
    """A copy of a (quiescent) database: PostgreSQL from it as a template, SQLite by backup."""
    if url.startswith("sqlite"):
        import sqlite3

        dest = work / "ours-100k.db"
        with sqlite3.connect(url.split("///", 1)[1]) as src, sqlite3.connect(dest) as dst:
            src.backup(dst)
        return f"sqlite:///{dest}"
    import psycopg

    name = f"ar_bench_big_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{url.rsplit("/", 1)[1]}"')  # type: ignore[arg-type]
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def pg_create(prefix: str) -> str:
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def pg_drop(url: str) -> None:
    import psycopg

    with contextlib.suppress(Exception), psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')  # type: ignore[arg-type]


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    work = Path(tempfile.mkdtemp(prefix=f"bench-{args.backend}-"))
    random.seed(1)
    out: dict[str, Any] = {"backend": args.backend, "versions": args.names * args.per_name, "names": args.names,
                           "workers": args.workers, "duration_s": args.duration, "results": [], "seed_s": {},
                           "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    cleanups: list[Callable[[], None]] = []
    try:
        if args.backend == "sqlite":
            ml_uri = f"sqlite:///{work / 'mlflow.db'}"
            ours_url = f"sqlite:///{work / 'ours.db'}"
        else:
            ml_uri = pg_create("mlf_bench").replace("postgresql://", "postgresql+psycopg2://", 1)
            ours_url = pg_create("ar_bench")
            cleanups += [lambda: pg_drop(ml_uri), lambda: pg_drop(ours_url)]
        token = "bench-admin-token-" + uuid.uuid4().hex
        print(f"[{args.backend}] starting servers in {work}", flush=True)
        ml = start_mlflow(work, ml_uri)
        cleanups.insert(0, ml.stop)
        ours = start_ours(work, ours_url, token, args.workers)
        cleanups.insert(0, ours.stop)

        r = httpx.post(f"http://127.0.0.1:{ours.port}/api/base-models", data={"name": "bench-base"},
                       files=[("files", (n, b)) for n, b in base_model_files().items()],
                       headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert r.status_code == 201, r.text

        ml_names = [f"m{i:03d}" for i in range(args.names)]
        our_names = [f"t{i:03d}" for i in range(args.names)]
        mlt = MLflowTarget("mlflow-keepalive", ml, ml_names)
        ourt = OursTarget("ours", ours, our_names)
        ourt.token = token
        ourt.template = AdapterTemplate()
        out["seed_s"]["mlflow"] = await seed(mlt, ml_names, args.per_name)
        print(f"  seeded MLflow: {args.names * args.per_name} versions in {out['seed_s']['mlflow']:.1f} s", flush=True)
        out["seed_s"]["ours"] = await seed(ourt, our_names, args.per_name)
        print(f"  seeded ours:   {args.names * args.per_name} versions in {out['seed_s']['ours']:.1f} s", flush=True)
        mlq = MLflowTarget("mlflow-capacity", ml, ml_names, artifacts=mlt.artifacts, quickack=True)

        # sequential registration through MLflow's own Python client (what its users see)
        out["mlflow_client_sequential_register_per_s"] = mlflow_client_register_rate(ml.port, ml_names[0], work)

        concs = [int(c) for c in args.clients.split(",")]
        ops = ["resolve", "list_versions", "download", "register"]
        for t in (ourt, mlt):  # prime every worker process (imports, pools, caches), not recorded
            for op in ops[:3]:
                await phase(t, op, 8, 1.0, 0.0)
        out["loadavg_before"] = os.getloadavg()
        await run_matrix([ourt, mlt, mlq], ops, concs, args.duration, args.warmup, out["results"])

        if args.scale:
            ours.stop()
            cleanups.remove(ours.stop)
            ml.stop()
            cleanups.remove(ml.stop)
            # A copy of our 1,000-version database grows to 100,000 versions; both are then served
            # at once and measured alternately (see scale_paired).
            analyze(ours_url)
            big_url = db_copy(ours_url, work)
            if big_url.startswith("postgresql"):
                cleanups.append(lambda: pg_drop(big_url))
            out["scale_insert_s"] = bulk_scale(big_url, args.scale_tasks, args.scale_tasks_versions)
            small_srv = start_ours(work, ours_url, token, args.workers, "ours-1k")
            cleanups.insert(0, small_srv.stop)
            big_srv = start_ours(work, big_url, token, args.workers, "ours-100k")
            cleanups.insert(0, big_srv.stop)
            all_names = our_names + [f"s{i:05d}" for i in range(args.scale_tasks - args.names)]
            small = OursTarget("ours-1k", small_srv, our_names, artifacts=ourt.artifacts)
            big = OursTarget("ours-100k", big_srv, all_names, artifacts=ourt.artifacts)
            for t in (small, big):
                t.token, t.template = token, ourt.template
                for op in ("resolve", "list_versions"):
                    await phase(t, op, 8, 1.0, 0.0)
            out["scale"] = await scale_paired(small, big, concs, args.duration, args.warmup, args.scale_repeats)
        out["loadavg_after"] = os.getloadavg()
    finally:
        for fn in cleanups:
            with contextlib.suppress(Exception):
                fn()
    return out


def mlflow_client_register_rate(port: int, name: str, work: Path, n: int = 10) -> float | None:
    """Versions/s registering sequentially with MLflow's own client (run + log_artifact + create)."""
    script = f"""
import os, time, mlflow
from mlflow import MlflowClient
mlflow.set_tracking_uri("http://127.0.0.1:{port}")
c = MlflowClient()
p = os.path.join({str(work)!r}, "artifact.bin")
open(p, "wb").write(os.urandom({MIB}))
t0 = time.perf_counter()
for i in range({n}):
    with mlflow.start_run() as run:
        mlflow.log_artifact(p, "model")
        c.create_model_version({name!r}, f"runs:/{{run.info.run_id}}/model", run.info.run_id)
print((time.perf_counter() - t0) / {n})
"""
    py = str(Path(MLFLOW_BIN).with_name("python"))
    try:
        r = subprocess.run([py, "-c", script], capture_output=True, text=True, timeout=300, cwd=work)
        per = float(r.stdout.strip().splitlines()[-1])
        print(f"  MLflow client, sequential register: {1 / per:.1f} versions/s", flush=True)
        return 1 / per
    except Exception as exc:  # informational only
        print(f"  MLflow client sequential register failed: {exc}", flush=True)
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--names", type=int, default=100)
    ap.add_argument("--per-name", type=int, default=10)
    ap.add_argument("--clients", default="1,8,50")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds measured per phase")
    ap.add_argument("--warmup", type=float, default=0.7)
    ap.add_argument("--workers", type=int, default=2, help="API processes for ours")
    ap.add_argument("--scale", action="store_true", help="then 100,000 versions over 10,000 tasks (ours)")
    ap.add_argument("--scale-tasks", type=int, default=10_000)
    ap.add_argument("--scale-tasks-versions", type=int, default=10)
    ap.add_argument("--scale-repeats", type=int, default=3, help="alternating runs per scale cell, pooled")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    res = asyncio.run(main_async(args))
    if args.out:
        args.out.write_text(json.dumps(res, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
