"""``adapter-registry serve --workers N``: N API processes, one SO_REUSEPORT socket each, so that a
burst of kept-alive clients is spread over the processes instead of landing on whichever woke first.
Real processes, real sockets."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from registry.api.server import reuseport_supported
from tests.fixtures.s3 import free_port
from tests.fixtures.stack import ROOT, make_stack

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not reuseport_supported(), reason="SO_REUSEPORT is Linux-only")]


def _serve(tmp: Path, port: int, workers: int) -> tuple[subprocess.Popen[bytes], Path]:
    st = make_stack(tmp)
    log = tmp / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "registry.cli", "serve", "--port", str(port),
                             "--workers", str(workers), "--no-access-log"],
                            cwd=ROOT, env=st.env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    return proc, log


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, port: int, children: int) -> list[psutil.Process]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        kids = [k for k in psutil.Process(proc.pid).children() if k.is_running()]
        listening = [k for k in kids if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
                                            for c in k.net_connections("tcp"))]
        if len(listening) == children:
            return listening
        time.sleep(0.2)
    raise AssertionError(f"{children} listening API processes did not come up: {log.read_text()[-3000:]}")


def test_connections_spread_over_every_process_and_sigterm_stops_all(tmp_path: Path) -> None:
    port = free_port()
    proc, log = _serve(tmp_path, port, workers=2)
    try:
        kids = _wait_ready(proc, log, port, children=2)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        # A burst: 16 connections opened together, as a fleet of clients starting at once does.
        burst = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(16)]
        try:
            per_process: list[int] = []
            for _ in range(50):
                time.sleep(0.1)
                per_process = [sum(1 for c in k.net_connections("tcp")
                                   if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port) for k in kids]
                if sum(per_process) == 16:
                    break
            # Each connection is hashed to one of the two sockets: all 16 on one process would happen
            # by chance once in 32,768 runs (with one shared socket, the first process to wake takes all).
            assert sum(per_process) == 16 and min(per_process) >= 1, per_process
            for s in burst:  # and each of them is served
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert s.recv(100).startswith(b"HTTP/1.1 200")
        finally:
            for s in burst:
                s.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
        assert not any(k.is_running() and k.status() != psutil.STATUS_ZOMBIE for k in kids)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_processes_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    """SIGKILL leaves the parent no chance to stop its children: the kernel's parent-death signal
    does, so no orphan keeps serving the port."""
    port = free_port()
    proc, log = _serve(tmp_path, port, workers=2)
    kids: list[psutil.Process] = []
    try:
        kids = _wait_ready(proc, log, port, children=2)
        proc.kill()
        proc.wait(10)
        gone, alive = psutil.wait_procs(kids, timeout=20)
        assert not alive, f"still running after the parent was killed: {[k.pid for k in alive]}"
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0  # nobody listens any more
    finally:
        for k in kids:
            with contextlib.suppress(psutil.NoSuchProcess):
                k.kill()


def test_port_in_use_fails_at_once(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc, log = _serve(tmp_path, port, workers=2)
        try:
            assert proc.wait(60) != 0
        finally:
            if proc.poll() is None:
                proc.kill()
        assert "in use" in log.read_text()
