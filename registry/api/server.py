"""Run the API in several processes, each with its own ``SO_REUSEPORT`` listening socket.

``uvicorn --workers N`` shares one listening socket between N processes, and an asyncio server that
wakes up accepts every pending connection at once: a burst of kept-alive clients (8 clients opening
their connections together) often lands entirely on one process while the others idle, so the same
load gives 900 or 2,300 pulls/s depending on who woke first (measured, docs/benchmarks.md). With one
socket per process and ``SO_REUSEPORT``, the kernel spreads new connections over the sockets by a
hash of the connection's addresses, as nginx's ``reuseport`` does. Linux only; elsewhere (or with one
worker) this falls back to plain uvicorn.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
from typing import Any

APP = "registry.api.app:create_app"


def reuseport_supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def _exit_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGTERM this process when its parent dies (``PR_SET_PDEATHSIG``): a
    parent killed with SIGKILL cannot stop its children, and they would go on serving the port."""
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before the call above took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _serve_one(host: str, port: int, uvicorn_kwargs: dict[str, Any], parent_pid: int) -> None:
    import uvicorn

    _exit_with_parent(parent_pid)

    sock = _listen(host, port, int(uvicorn_kwargs.get("backlog", 2048)))
    config = uvicorn.Config(APP, factory=True, host=host, port=port, **uvicorn_kwargs)
    uvicorn.Server(config).run(sockets=[sock])


def serve(host: str, port: int, workers: int = 1, **uvicorn_kwargs: Any) -> None:
    """Serve the API on ``host:port`` with ``workers`` processes; returns when they all stop."""
    import uvicorn

    if workers <= 1 or not reuseport_supported():
        uvicorn.run(APP, factory=True, host=host, port=port, workers=workers, **uvicorn_kwargs)
        return
    # Bind once here first, so a port already in use fails at once with a clear error instead of in
    # N children; each child then binds its own socket on the same port.
    try:
        _listen(host, port, 1).close()
    except OSError as exc:
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited pools or threads
    procs = [ctx.Process(target=_serve_one, args=(host, port, uvicorn_kwargs, os.getpid()), name=f"api-{i}")
             for i in range(workers)]
    for p in procs:
        p.start()

    def stop_all(*_: Any) -> None:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop_all) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        # One process ending (a crash, or a signal) ends them all: a supervisor (compose, systemd)
        # then restarts the whole server rather than leaving it quietly at part capacity.
        multiprocessing.connection.wait([p.sentinel for p in procs])
        stop_all()
        for p in procs:
            p.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failed = [f"{p.name} (exit {p.exitcode})" for p in procs if p.exitcode not in (0, -signal.SIGTERM)]
    if failed:
        raise SystemExit(f"API processes failed: {', '.join(failed)}")
