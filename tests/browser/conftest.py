"""Real-browser fixtures: the real app under uvicorn, a real Celery worker, Debian chromium.

Everything runs against a temporary REGISTRY_HOME (SQLite, local store, filesystem broker). A tiny
random BERT (hidden 32, 2 layers) is built in-process and registered through the HTTP client, so
a training job really trains in a few seconds on CPU.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

POSITIVE = "good great fun very good a great film fun movie".split()
NEGATIVE = "bad awful boring not good very bad an awful film boring movie".split()
VOCAB_WORDS = sorted(set(POSITIVE + NEGATIVE + "the a is was it this that i and of to movie film".split()))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_tiny_bert(d: Path) -> Path:
    """A tiny random BERT (safetensors) with a WordPiece tokenizer; no download."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *VOCAB_WORDS, *[chr(c) for c in range(97, 123)]]
    vocab_file = d / "vocab.txt"
    vocab_file.write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tok = BertTokenizerFast(vocab_file=str(vocab_file))
    tok.save_pretrained(d)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(dict.fromkeys(vocab)), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, max_position_embeddings=64, pad_token_id=0)
    BertModel(cfg).save_pretrained(d, safe_serialization=True)
    for extra in d.iterdir():  # keep only files a base model directory may hold
        if extra.name not in {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json",
                              "tokenizer_config.json", "special_tokens_map.json"}:
            extra.unlink()
    return d


def write_dataset(path: Path, rows: int = 48, seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines = ["sentence\tlabel"]
    for i in range(rows):
        words, label = (POSITIVE, "positive") if i % 2 == 0 else (NEGATIVE, "negative")
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 7))) + f"\t{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class WebStack:
    url: str
    home: Path
    token: str
    base_model: str
    dataset: Path
    dev: Path
    logs: Path


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server did not answer in {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebStack]:
    from registry.migrate import upgrade
    from registry.settings import Settings

    root = tmp_path_factory.mktemp("browser")
    home = root / "home"
    logs = root / "logs"
    logs.mkdir()
    env = {**os.environ, "REGISTRY_HOME": str(home), "REGISTRY_HEARTBEAT_INTERVAL_S": "1",
           "REGISTRY_CACHE_DIR": str(root / "cache"), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    env.pop("REGISTRY_DATABASE_URL", None)
    env.pop("REGISTRY_BROKER_URL", None)
    settings = Settings(home=home)
    settings.ensure_dirs()
    upgrade(settings)
    token = settings.embedded_admin_token()

    procs: list[subprocess.Popen[bytes]] = []
    worker_log = logs / "worker.log"
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", "gpu,default",
         "--concurrency", "1", "--pool", "solo", "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
        cwd=ROOT, env=env, stdout=worker_log.open("wb"), stderr=subprocess.STDOUT,
    ))
    port = _free_port()
    server_log = logs / "server.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "registry.api.app:create_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=server_log.open("wb"), stderr=subprocess.STDOUT,
    )
    procs.append(server)
    url = f"http://127.0.0.1:{port}"
    try:
        model_dir = make_tiny_bert(root / "tiny-bert")
        dataset = write_dataset(root / "reviews.tsv")
        dev = write_dataset(root / "reviews-dev.tsv", rows=16, seed=1)
        _wait_http(url + "/healthz", server, server_log)
        from registry.client import RegistryClient

        with RegistryClient(url, token=token, cache_dir=root / "cache") as client:
            client.register_base_model("tiny-bert", model_dir, description="Tiny random BERT for browser tests")
        yield WebStack(url=url, home=home, token=token, base_model="tiny-bert", dataset=dataset, dev=dev,
                     logs=logs)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def shots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture()
def page(browser: Any, web: WebStack) -> Iterator[Any]:
    context = browser.new_context(base_url=web.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    # CSP violations and script errors show up on the console; HTTP error statuses we provoke do not count.
    pg.on("console", lambda msg: errors.append(msg.text)
          if msg.type == "error" and "Failed to load resource" not in msg.text else None)
    pg.on("dialog", lambda d: d.accept())
    yield pg
    context.close()
    assert not errors, f"JavaScript errors: {errors}"
