"""The Python client: pull an adapter by task name into a verified local cache, and load it.

    from registry import client
    path = client.pull("sst2")                       # latest version
    model = client.load("sst2", alias="production")  # base + adapter + head, ready to predict
    model.predict(["a gripping, funny film"])

Files are cached by sha256: a second pull of the same version downloads nothing, and a file is
only ever moved into the cache after its sha256 matched the manifest (a corrupt download is
refused and leaves nothing behind). Torch is imported only by ``load``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from registry.errors import IntegrityFailure, RegistryError
from registry.hashing import CHUNK

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]  # (file name, bytes done, bytes total)
DEFAULT_URL = "http://127.0.0.1:8000"


class ClientError(RegistryError):
    """An error answer from the server, carrying its problem+json body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(str(problem.get("detail") or problem.get("title") or f"HTTP {status}"),
                         field=problem.get("field"))
        self.status = status
        self.problem_body = problem


def _default_cache() -> Path:
    env = os.environ.get("ADAPTER_REGISTRY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "adapter-registry"


def _default_token() -> str | None:
    token = os.environ.get("ADAPTER_REGISTRY_TOKEN")
    if token:
        return token
    home = Path(os.environ.get("REGISTRY_HOME", ".registry"))
    path = home / "admin-token"
    return path.read_text().strip() if path.exists() else None


class RegistryClient:
    def __init__(self, url: str | None = None, *, token: str | None = None, cache_dir: Path | None = None,
                 timeout: float = 60.0) -> None:
        self.url = (url or os.environ.get("ADAPTER_REGISTRY_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else _default_token()
        self.cache_dir = Path(cache_dir) if cache_dir else _default_cache()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, follow_redirects=True)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------------------
    def _check(self, r: httpx.Response) -> Any:
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = {"title": r.reason_phrase, "detail": r.text[:500]}
            raise ClientError(r.status_code, body)
        if r.status_code == 204 or not r.content:
            return None
        return r.json()

    def get(self, path: str, **params: Any) -> Any:
        return self._check(self.http.get(path, params={k: v for k, v in params.items() if v is not None}))

    def post(self, path: str, **kwargs: Any) -> Any:
        return self._check(self.http.post(path, **kwargs))

    # -- registry management ------------------------------------------------------------------
    def register_base_model(self, name: str, path: Path, *, description: str = "") -> dict[str, Any]:
        """Upload a local Hugging Face directory (config, safetensors weights, tokenizer files)."""
        from registry.basemodels.service import ALLOWED_EXTRA, WEIGHT_RE

        path = Path(path)
        names = sorted(p.name for p in path.iterdir()
                       if p.is_file() and (WEIGHT_RE.fullmatch(p.name) or ALLOWED_EXTRA.fullmatch(p.name)))
        handles = [open(path / n, "rb") for n in names]  # noqa: SIM115 - closed below
        try:
            files = [("files", (n, h, "application/octet-stream")) for n, h in zip(names, handles, strict=True)]
            return self._check(self.http.post("/api/base-models", data={"name": name, "description": description},
                                              files=files, timeout=600))  # type: ignore[no-any-return]
        finally:
            for h in handles:
                h.close()

    def create_task(self, name: str, *, type: str = "single_label", labels: Iterable[str] = (),
                    description: str = "", tags: Iterable[str] = ()) -> dict[str, Any]:
        return self.post("/api/tasks", json={"name": name, "type": type, "labels": list(labels),  # type: ignore[no-any-return]
                                             "description": description, "tags": list(tags)})

    def upload_dataset(self, task: str, train: Path, *, mapping: dict[str, Any], dev: Path | None = None,
                       format: str | None = None, name: str | None = None) -> dict[str, Any]:
        files: dict[str, Any] = {"train": (Path(train).name, open(train, "rb"))}  # noqa: SIM115
        if dev is not None:
            files["dev"] = (Path(dev).name, open(dev, "rb"))  # noqa: SIM115
        data = {"mapping": json.dumps(mapping)}
        if format:
            data["format"] = format
        if name:
            data["dataset_name"] = name
        try:
            return self._check(self.http.post(f"/api/tasks/{task}/datasets", data=data, files=files,  # type: ignore[no-any-return]
                                              timeout=600))
        finally:
            for _, (_, fh) in files.items():
                fh.close()

    def submit(self, task: str, *, base_model: str, dataset_id: int, method: str = "houlsby",
               method_config: dict[str, Any] | None = None, hyperparameters: dict[str, Any] | None = None,
               parent_version: int | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
        body = {"task": task, "base_model": base_model, "dataset_id": dataset_id, "method": method,
                "method_config": method_config or {}, "hyperparameters": hyperparameters or {},
                "parent_version": parent_version}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._check(self.http.post("/api/jobs", json=body, headers=headers))  # type: ignore[no-any-return]

    def job(self, job_id: int) -> dict[str, Any]:
        return self.get(f"/api/jobs/{job_id}")  # type: ignore[no-any-return]

    def wait(self, job_id: int, *, timeout: float = 24 * 3600, poll: float = 1.0,
             on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_update:
                on_update(job)
            if job["state"] in ("succeeded", "failed", "cancelled"):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout} s")
            time.sleep(poll)

    def cancel(self, job_id: int) -> dict[str, Any]:
        return self.post(f"/api/jobs/{job_id}/cancel")  # type: ignore[no-any-return]

    def promote(self, task: str, alias: str, version: int) -> dict[str, Any]:
        return self._check(self.http.put(f"/api/tasks/{task}/aliases/{alias}", json={"version": version}))  # type: ignore[no-any-return]

    def import_adapter(self, task: str, directory: Path, *, base_model: str, metrics: dict[str, float] | None = None,
                       description: str = "", parent_version: int | None = None) -> dict[str, Any]:
        """Register an adapter trained elsewhere: a PEFT directory (adapter_config.json,
        adapter_model.safetensors [, head.safetensors]). Pickles are refused by the server."""
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory} is not a directory")
        names = sorted(p.name for p in directory.iterdir()
                       if p.is_file() and (p.name in ("adapter_config.json", "adapter_model.safetensors",
                                                      "head.safetensors")
                                           or p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")))
        handles = [open(directory / n, "rb") for n in names]  # noqa: SIM115 - closed below
        data: dict[str, Any] = {"base_model": base_model, "description": description}
        if metrics:
            data["metrics"] = json.dumps(metrics)
        if parent_version is not None:
            data["parent_version"] = str(parent_version)
        try:
            files = [("files", (n, h, "application/octet-stream")) for n, h in zip(names, handles, strict=True)]
            return self._check(self.http.post(f"/api/tasks/{task}/versions/import", data=data, files=files,  # type: ignore[no-any-return]
                                              timeout=600))
        finally:
            for h in handles:
                h.close()

    def lineage(self, task: str, version: int) -> dict[str, Any]:
        return self.get(f"/api/tasks/{task}/versions/{version}/lineage")  # type: ignore[no-any-return]

    def versions(self, task: str) -> list[dict[str, Any]]:
        return self.get(f"/api/tasks/{task}/versions")["items"]  # type: ignore[no-any-return]

    # -- pull -------------------------------------------------------------------------------------
    def manifest(self, task: str, *, alias: str | None = None, version: int | None = None) -> dict[str, Any]:
        return self.get(f"/api/tasks/{task}/adapter", alias=alias, version=version)  # type: ignore[no-any-return]

    def _blob_path(self, sha256: str) -> Path:
        return self.cache_dir / "blobs" / "sha256" / sha256[:2] / sha256

    def _fetch_blob(self, f: dict[str, Any], progress: ProgressFn | None) -> tuple[Path, bool]:
        """Returns (path in cache, downloaded?). Verifies sha256 before the file enters the cache."""
        sha, size, name = f["sha256"], int(f["size"]), f["name"]
        target = self._blob_path(sha)
        if target.exists() and target.stat().st_size == size:
            if progress:
                progress(name, size, size)
            return target, False
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{sha}.{uuid.uuid4().hex[:8]}.part")
        try:
            import hashlib

            h = hashlib.sha256()
            done = 0
            with self.http.stream("GET", f"/api/blobs/{sha}", timeout=600) as r:
                if r.status_code >= 400:
                    r.read()
                    self._check(r)
                with open(tmp, "wb") as out:
                    for chunk in r.iter_bytes(CHUNK):
                        h.update(chunk)
                        out.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(name, done, size)
            if h.hexdigest() != sha or done != size:
                raise IntegrityFailure(
                    f"{name}: downloaded {done} bytes with sha256 {h.hexdigest()}, expected {size} bytes "
                    f"with sha256 {sha}; the stored file is corrupt or was tampered with. Nothing was cached."
                )
            os.chmod(tmp, 0o444)
            os.replace(tmp, target)
            return target, True
        finally:
            tmp.unlink(missing_ok=True)

    def _materialise(self, files: list[dict[str, Any]], dest: Path, progress: ProgressFn | None) -> int:
        """Link verified blobs into ``dest`` under their file names; returns how many were downloaded."""
        downloaded = 0
        staging = dest.with_name(dest.name + f".tmp-{uuid.uuid4().hex[:8]}")
        staging.mkdir(parents=True, exist_ok=True)
        try:
            for f in files:
                blob, fetched = self._fetch_blob(f, progress)
                downloaded += int(fetched)
                link = staging / f["name"]
                try:
                    os.link(blob, link)
                except OSError:
                    shutil.copyfile(blob, link)
            if dest.exists():
                shutil.rmtree(staging)
            else:
                os.replace(staging, dest)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return downloaded

    def pull(self, task: str, *, alias: str | None = None, version: int | None = None,
             progress: ProgressFn | None = None) -> Path:
        """Download a version into the cache and return its directory (adapter_config.json, ...)."""
        m = self.manifest(task, alias=alias, version=version)
        key = "-".join(sorted(f["sha256"][:12] for f in m["files"]))
        dest = self.cache_dir / "adapters" / m["task"] / f"v{m['version']}-{key}"
        n = self._materialise(m["files"], dest, progress)
        (dest.parent / f"v{m['version']}.manifest.json").write_text(json.dumps(m, indent=2))
        self.last_pull_downloaded = n
        log.info("pulled %s v%d into %s (%d files downloaded)", m["task"], m["version"], dest, n)
        return dest

    def pull_base_model(self, name: str, *, progress: ProgressFn | None = None) -> Path:
        bm = self.get(f"/api/base-models/{name}")
        dest = self.cache_dir / "base-models" / bm["weights_sha256"]
        self._materialise(bm["files"], dest, progress)
        return dest

    def load(self, task: str, *, alias: str | None = None, version: int | None = None,
             base_dir: Path | None = None, device: str = "cpu", progress: ProgressFn | None = None) -> Any:
        """Base model + adapter + head, with the base model's sha256 checked, ready to ``predict``."""
        from registry.methods.model import load_adapted_model

        m = self.manifest(task, alias=alias, version=version)
        adapter_dir = self.pull(task, version=m["version"], progress=progress)
        base = Path(base_dir) if base_dir else self.pull_base_model(m["base_model"]["name"], progress=progress)
        return load_adapted_model(base, adapter_dir, base_sha256=m["base_model"]["sha256"], device=device)


_default: RegistryClient | None = None


def default_client() -> RegistryClient:
    global _default
    if _default is None:
        _default = RegistryClient()
    return _default


def pull(task: str, *, alias: str | None = None, version: int | None = None) -> Path:
    return default_client().pull(task, alias=alias, version=version)


def load(task: str, *, alias: str | None = None, version: int | None = None, device: str = "cpu") -> Any:
    return default_client().load(task, alias=alias, version=version, device=device)
