"""The API process freezes its start-up heap out of the cyclic GC's reach (and again after warm-up),
so full collections, which stop the event loop, stay short."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from registry.api.app import create_app
from registry.settings import Settings


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process must not keep a frozen heap


def test_startup_freezes_heap_and_refreezes_after_warmup(tmp_path: Path) -> None:
    app = create_app(Settings(home=tmp_path, gc_refreeze_after_s=0.3))
    assert gc.get_freeze_count() == 0
    with TestClient(app) as client:
        frozen_at_start = gc.get_freeze_count()
        assert frozen_at_start > 10_000  # modules, routes, settings: the long-lived heap
        gc.unfreeze()
        assert client.get("/healthz").status_code == 200
        deadline = time.monotonic() + 10
        while gc.get_freeze_count() == 0 and time.monotonic() < deadline:
            client.get("/healthz")
            time.sleep(0.05)
        assert gc.get_freeze_count() > 10_000, "no second freeze after warm-up"


def test_freeze_can_be_turned_off(tmp_path: Path) -> None:
    app = create_app(Settings(home=tmp_path, gc_freeze=False))
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() == 0
