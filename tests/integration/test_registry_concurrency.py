"""Version numbers are gapless and unique under concurrency, on PostgreSQL (32-way) and SQLite
(8-way), with registrations through the service (``session_scope``) and through the HTTP import
endpoint racing each other on the same task at the same moment."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from registry.db import session_scope
from registry.models import AdapterVersion, BaseModel, Task
from registry.versions import service
from tests.fixtures.adapters import peft_lora_dir
from tests.fixtures.stack import Stack

pytestmark = pytest.mark.integration


def _race(st: Stack, tmp: Path, n: int) -> tuple[list[int], list[int], list[str]]:
    """n service registrations and n HTTP imports on task "race", all released at once."""
    c = st.client()
    c.create_task("race", type="single_label", labels=["neg", "pos"])
    dirs = [peft_lora_dir(tmp / f"imp{i}", seed=i) for i in range(n)]
    bodies = [{name: (d / name).read_bytes() for name in ("adapter_config.json", "adapter_model.safetensors",
                                                          "head.safetensors")} for d in dirs]
    barrier = threading.Barrier(2 * n)
    errors: list[str] = []

    def via_service(i: int) -> int:
        barrier.wait()
        try:
            with session_scope(st.settings) as s:
                task = s.scalar(select(Task).where(Task.name == "race"))
                bm = s.scalar(select(BaseModel).where(BaseModel.name == "tiny-bert"))
                assert task is not None and bm is not None
                v = service.register(s, task=task, base_model=bm, method="lora", method_config={"r": 8},
                                     files=[{"name": "adapter_model.safetensors", "size": 1, "sha256": "0" * 64}],
                                     metrics={}, trainable_params=1, total_params=2, code_version="race",
                                     origin="imported")
                return v.number
        except Exception as exc:  # collected: the test asserts there are none
            errors.append(f"service: {exc!r}")
            return -1

    def via_http(i: int) -> int:
        with httpx.Client(base_url=st.api_url or "", headers=st.headers(), timeout=120) as h:
            barrier.wait()
            r = h.post("/api/tasks/race/versions/import", data={"base_model": "tiny-bert"},
                       files=[("files", (k, b, "application/octet-stream")) for k, b in bodies[i].items()])
        if r.status_code != 201:
            errors.append(f"http {r.status_code}: {r.text[:300]}")
            return -1
        return int(r.json()["version"])

    with ThreadPoolExecutor(2 * n) as pool:
        svc = [pool.submit(via_service, i) for i in range(n)]
        web = [pool.submit(via_http, i) for i in range(n)]
        svc_numbers = [f.result() for f in svc]
        web_numbers = [f.result() for f in web]
    c.close()
    return svc_numbers, web_numbers, errors


def _check(st: Stack, tmp: Path, n: int, tiny_bert: Path) -> None:
    st.start_api()
    c = st.client()
    c.register_base_model("tiny-bert", tiny_bert)
    c.close()
    svc, web, errors = _race(st, tmp, n)
    assert errors == []
    assert sorted(svc + web) == list(range(1, 2 * n + 1))
    with session_scope(st.settings, write=False) as s:
        numbers = sorted(s.scalars(select(AdapterVersion.number).join(Task).where(Task.name == "race")))
        task = s.scalar(select(Task).where(Task.name == "race"))
        assert task is not None and task.next_version == 2 * n
    assert numbers == list(range(1, 2 * n + 1))


def test_32_way_race_on_postgresql(stack_factory: Any, tiny_bert: Path, tmp_path: Path) -> None:
    _check(stack_factory(db="postgres"), tmp_path, 32, tiny_bert)


def test_8_way_race_on_sqlite(stack_factory: Any, tiny_bert: Path, tmp_path: Path) -> None:
    _check(stack_factory(db="sqlite"), tmp_path, 8, tiny_bert)
