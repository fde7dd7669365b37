"""`adapter-registry`: serve, worker, and every registry operation from the shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn
from rich.table import Table

app = typer.Typer(help="Adapter Registry: train adapters on request, version them, pull them by task name.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
base_models_app = typer.Typer(help="Base models", no_args_is_help=True)
tasks_app = typer.Typer(help="Tasks", no_args_is_help=True)
datasets_app = typer.Typer(help="Datasets", no_args_is_help=True)
jobs_app = typer.Typer(help="Training jobs", no_args_is_help=True)
versions_app = typer.Typer(help="Adapter versions", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens", no_args_is_help=True)
app.add_typer(base_models_app, name="base-models")
app.add_typer(tasks_app, name="tasks")
app.add_typer(datasets_app, name="datasets")
app.add_typer(jobs_app, name="jobs")
app.add_typer(versions_app, name="versions")
app.add_typer(tokens_app, name="tokens")

console = Console(stderr=True)
out = Console(soft_wrap=True)

UrlOpt = Annotated[str | None, typer.Option("--url", envvar="ADAPTER_REGISTRY_URL", help="registry URL")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="ADAPTER_REGISTRY_TOKEN", help="bearer token")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def _client(url: str | None, token: str | None) -> Any:
    from registry.client import RegistryClient

    return RegistryClient(url, token=token)


def _run(fn: Any) -> Any:
    from registry.errors import RegistryError

    try:
        return fn()
    except RegistryError as exc:
        field = f" [{exc.field}]" if exc.field else ""
        console.print(f"[red]error{field}:[/red] {exc.detail}")
        raise typer.Exit(2) from exc
    except Exception as exc:  # connection refused and friends: say it plainly
        import httpx

        if isinstance(exc, httpx.HTTPError):
            console.print(f"[red]cannot reach the registry:[/red] {exc}")
            raise typer.Exit(3) from exc
        raise


def _emit(data: Any, as_json: bool, columns: list[str] | None = None, title: str | None = None) -> None:
    if as_json or columns is None:
        out.print_json(json.dumps(data, default=str))
        return
    rows = data if isinstance(data, list) else [data]
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*(str(r.get(c, "")) if not isinstance(r.get(c), float) else f"{r[c]:.4g}" for c in columns))
    out.print(table)


def _kv(pairs: list[str], what: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for p in pairs:
        if "=" not in p:
            raise typer.BadParameter(f"{what} must be key=value, got {p!r}")
        k, v = p.split("=", 1)
        try:
            result[k] = json.loads(v)
        except json.JSONDecodeError:
            result[k] = v
    return result


class _Bars:
    def __init__(self) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), console=console, transient=False)
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, name: str, done: int, total: int) -> None:
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=total)
        self.progress.update(self.tasks[name], completed=done)


# -- processes -----------------------------------------------------------------------------------
@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (Alembic)."""
    from registry.migrate import upgrade

    upgrade()
    console.print("[green]database at head[/green]")


@app.command()
def serve(
    host: str = "127.0.0.1", port: int = 8000,
    workers: Annotated[int, typer.Option(min=1, help="API processes (Linux: one SO_REUSEPORT socket each); "
                                                     "about one per core")] = 1,
    access_log: Annotated[bool, typer.Option(help="log every request")] = True,
    with_worker: Annotated[bool, typer.Option(help="also start a Celery worker process")] = False,
) -> None:
    """Run the API and web pages (uvicorn); migrates the database first."""
    from registry.api.server import serve as serve_api
    from registry.migrate import upgrade
    from registry.settings import get_settings

    settings = get_settings()
    upgrade(settings)
    worker = None
    if with_worker:
        worker = subprocess.Popen([sys.executable, "-m", "registry.cli", "worker"])
    if settings.mode == "embedded" and not settings.admin_token:
        console.print(f"[bold]admin token:[/bold] {settings.embedded_admin_token()}  "
                      f"(saved in {settings.home / 'admin-token'})")
    db = settings.database_url.split("@")[-1]
    console.print(f"[bold]Adapter Registry[/bold] on http://{host}:{port}  (database {db}, "
                  f"store {settings.store_backend}, broker {settings.broker_url.split('@')[-1]})")
    try:
        serve_api(host, port, workers, log_level="info", access_log=access_log)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)


@app.command()
def worker(
    queues: str = "gpu,default", concurrency: int = 1, loglevel: str = "INFO",
    pool: Annotated[str, typer.Option(help="prefork (a killed child is redelivered) or solo")] = "prefork",
) -> None:
    """Run a Celery training worker (CUDA when present, CPU otherwise)."""
    args = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", queues,
            "--concurrency", str(concurrency), "--prefetch-multiplier", "1", "--loglevel", loglevel,
            "--pool", pool, "--without-gossip", "--without-mingle"]
    os.execv(sys.executable, args)


# -- base models ---------------------------------------------------------------------------------
@base_models_app.command("register")
def base_models_register(name: str, path: Path, description: str = "", url: UrlOpt = None,
                         token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Register a base model from a local Hugging Face directory (safetensors only)."""
    with console.status(f"uploading {path} ..."):
        bm = _run(lambda: _client(url, token).register_base_model(name, path, description=description))
    _emit(bm, as_json, ["name", "architecture", "hidden_size", "num_layers", "num_parameters", "weights_sha256"])


@base_models_app.command("list")
def base_models_list(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    items = _run(lambda: _client(url, token).get("/api/base-models"))["items"]
    _emit(items, as_json, ["name", "architecture", "num_layers", "hidden_size", "num_parameters", "task_types"])


@base_models_app.command("show")
def base_models_show(name: str, url: UrlOpt = None, token: TokenOpt = None) -> None:
    _emit(_run(lambda: _client(url, token).get(f"/api/base-models/{name}")), True)


# -- tasks ---------------------------------------------------------------------------------------
@tasks_app.command("create")
def tasks_create(
    name: str, type: Annotated[str, typer.Option("--type")] = "single_label",
    label: Annotated[list[str] | None, typer.Option("--label", help="repeat for each label, in order")] = None,
    description: str = "", tag: Annotated[list[str] | None, typer.Option("--tag")] = None,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    t = _run(lambda: _client(url, token).create_task(name, type=type, labels=label or [], description=description,
                                                       tags=tag or []))
    _emit(t, as_json, ["name", "type", "labels", "tags"])


@tasks_app.command("list")
def tasks_list(q: str | None = None, tag: str | None = None, url: UrlOpt = None, token: TokenOpt = None,
               as_json: JsonOpt = False) -> None:
    items = _run(lambda: _client(url, token).get("/api/tasks", q=q, tag=tag))["items"]
    _emit(items, as_json, ["name", "type", "versions", "latest_version", "aliases", "tags"])


@tasks_app.command("show")
def tasks_show(name: str, url: UrlOpt = None, token: TokenOpt = None) -> None:
    _emit(_run(lambda: _client(url, token).get(f"/api/tasks/{name}")), True)


# -- datasets ------------------------------------------------------------------------------------
@datasets_app.command("upload")
def datasets_upload(
    task: str, train: Path,
    text: Annotated[str, typer.Option(help="text column: header name, or 0-based index without header")],
    label: Annotated[str | None, typer.Option(help="label column")] = None,
    text_pair: Annotated[str | None, typer.Option(help="second text column (text-pair tasks)")] = None,
    response: Annotated[str | None, typer.Option(help="response column (causal LM)")] = None,
    header: Annotated[bool, typer.Option("--header/--no-header")] = True,
    dev: Annotated[Path | None, typer.Option(help="dev split file")] = None,
    format: Annotated[str | None, typer.Option(help="tsv, csv or jsonl (default: from the name)")] = None,
    name: str | None = None, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    mapping = {"text": text, "label": label, "text_pair": text_pair, "response": response, "has_header": header}
    with console.status("uploading and validating ..."):
        ds = _run(lambda: _client(url, token).upload_dataset(task, train, mapping=mapping, dev=dev, format=format,
                                                             name=name))
    _emit(ds, as_json, ["id", "task", "name", "num_rows", "sha256"])


@datasets_app.command("list")
def datasets_list(task: str | None = None, url: UrlOpt = None, token: TokenOpt = None,
                  as_json: JsonOpt = False) -> None:
    items = _run(lambda: _client(url, token).get("/api/datasets", task=task))["items"]
    _emit(items, as_json, ["id", "task", "name", "num_rows", "sha256"])


@datasets_app.command("show")
def datasets_show(dataset_id: int, url: UrlOpt = None, token: TokenOpt = None) -> None:
    _emit(_run(lambda: _client(url, token).get(f"/api/datasets/{dataset_id}")), True)


# -- jobs ----------------------------------------------------------------------------------------
def _wait_with_bar(client: Any, job: dict[str, Any]) -> dict[str, Any]:
    with Progress(TextColumn("job {task.fields[job]} {task.fields[state]}"), BarColumn(),
                  TextColumn("step {task.completed}/{task.total}  loss {task.fields[loss]}"),
                  console=console) as progress:
        bar = progress.add_task("train", total=None, job=job["id"], state=job["state"], loss="-")

        def update(j: dict[str, Any]) -> None:
            p = j.get("progress") or {}
            progress.update(bar, total=p.get("total_steps"), completed=p.get("step") or 0, state=j["state"],
                            loss=f"{p['loss']:.4f}" if isinstance(p.get("loss"), float) else "-")

        final: dict[str, Any] = client.wait(job["id"], on_update=update)
    return final


@app.command()
def submit(
    task: str,
    base_model: Annotated[str, typer.Option("--base-model")],
    dataset: Annotated[int, typer.Option("--dataset", help="dataset id")],
    method: str = "houlsby",
    config: Annotated[list[str] | None, typer.Option("--config", help="method config key=value")] = None,
    hp: Annotated[list[str] | None, typer.Option("--hp", help="hyper-parameter key=value")] = None,
    parent: Annotated[int | None, typer.Option("--parent", help="warm-start from this version")] = None,
    idempotency_key: str | None = None,
    wait: Annotated[bool, typer.Option("--wait", help="wait with a progress bar")] = False,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Submit a training job."""
    client = _client(url, token)
    job = _run(lambda: client.submit(task, base_model=base_model, dataset_id=dataset, method=method,
                                     method_config=_kv(config or [], "--config"),
                                     hyperparameters=_kv(hp or [], "--hp"), parent_version=parent,
                                     idempotency_key=idempotency_key))
    console.print(f"job {job['id']} {job['state']}")
    if wait:
        job = _run(lambda: _wait_with_bar(client, job))
        if job["state"] != "succeeded":
            console.print(f"[red]job {job['id']} {job['state']}:[/red] {job.get('error_message') or ''}")
            raise typer.Exit(1)
        console.print(f"[green]registered {task} v{job['version']}[/green]")
    _emit(job if as_json else {k: job[k] for k in ("id", "task", "method", "state", "version")}, as_json,
          None if as_json else ["id", "task", "method", "state", "version"])


@jobs_app.command("list")
def jobs_list(state: str | None = None, task: str | None = None, url: UrlOpt = None, token: TokenOpt = None,
              as_json: JsonOpt = False) -> None:
    items = _run(lambda: _client(url, token).get("/api/jobs", state=state, task=task))["items"]
    for j in items:
        j["step"] = f"{(j['progress'] or {}).get('step', 0)}/{(j['progress'] or {}).get('total_steps') or '?'}"
    _emit(items, as_json, ["id", "task", "method", "state", "step", "version", "error_message"])


@jobs_app.command("show")
def jobs_show(job_id: int, url: UrlOpt = None, token: TokenOpt = None) -> None:
    _emit(_run(lambda: _client(url, token).job(job_id)), True)


@jobs_app.command("wait")
def jobs_wait(job_id: int, url: UrlOpt = None, token: TokenOpt = None) -> None:
    client = _client(url, token)
    job = _run(lambda: _wait_with_bar(client, client.job(job_id)))
    console.print(f"job {job_id} {job['state']}" + (f": {job['error_message']}" if job.get("error_message") else ""))
    raise typer.Exit(0 if job["state"] == "succeeded" else 1)


@jobs_app.command("cancel")
def jobs_cancel(job_id: int, url: UrlOpt = None, token: TokenOpt = None) -> None:
    job = _run(lambda: _client(url, token).cancel(job_id))
    console.print(f"job {job_id}: {job['state']}" + (" (cancel requested)" if job["cancel_requested"] else ""))


# -- versions, pull, promote, lineage --------------------------------------------------------------
@versions_app.command("list")
def versions_list(task: str, url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    items = _run(lambda: _client(url, token).versions(task))
    for v in items:
        v["accuracy"] = v["metrics"].get("accuracy")
        v["share"] = f"{100 * v['trainable_share']:.2f}%"
    _emit(items, as_json, ["version", "method", "accuracy", "share", "size_bytes", "aliases", "created_at"])


@versions_app.command("show")
def versions_show(task: str, version: int, url: UrlOpt = None, token: TokenOpt = None) -> None:
    _emit(_run(lambda: _client(url, token).get(f"/api/tasks/{task}/versions/{version}")), True)


@app.command()
def pull(
    task: str, alias: str | None = None, version: int | None = None,
    to: Annotated[Path | None, typer.Option(help="also copy the files here")] = None,
    url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Pull an adapter by task name (latest, --alias or --version) into the local cache."""
    import shutil

    client = _client(url, token)
    bars = _Bars()
    with bars.progress:
        path = _run(lambda: client.pull(task, alias=alias, version=version, progress=bars))
    if to is not None:
        to.mkdir(parents=True, exist_ok=True)
        for f in path.iterdir():
            shutil.copyfile(f, to / f.name)
        path = to
    typer.echo(str(path))


@app.command()
def predict(task: str, texts: list[str], alias: str | None = None, version: int | None = None,
            url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Load base + adapter + head for a task and predict labels for the given texts."""
    client = _client(url, token)
    bars = _Bars()
    with bars.progress:
        model = _run(lambda: client.load(task, alias=alias, version=version, progress=bars))
    for text, label in zip(texts, model.predict(texts), strict=True):
        out.print(f"{label}\t{text}")


@app.command()
def promote(task: str, alias: str, version: int, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Point an alias (production, staging, ...) at a version."""
    a = _run(lambda: _client(url, token).promote(task, alias, version))
    console.print(f"[green]{a['task']}@{a['alias']} -> v{a['version']}[/green]")


@app.command()
def lineage(task: str, version: int, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Show where a version came from: base model, dataset, parent versions, job."""
    from rich.tree import Tree

    lin = _run(lambda: _client(url, token).lineage(task, version))
    tree = Tree(f"[bold]{task} v{version}[/bold] ({lin['version']['method']}, {lin['origin']})")
    tree.add(f"base model {lin['base_model']['name']}  sha256 {lin['base_model']['sha256'][:16]}…")
    if lin["dataset"]:
        tree.add(f"dataset #{lin['dataset']['id']} {lin['dataset']['name']}  sha256 {lin['dataset']['sha256'][:16]}…")
    if lin["job"]:
        tree.add(f"job {lin['job']['id']} ({lin['job']['state']}) by {lin['job']['submitted_by']}")
    node = tree
    for anc in lin["ancestry"]:
        node = node.add(f"parent {anc['task']} v{anc['version']} ({anc['method']})")
    for ch in lin["children"]:
        tree.add(f"child {ch['task']} v{ch['version']}")
    out.print(tree)


@app.command("trained-on")
def trained_on(
    dataset: Annotated[int | None, typer.Option("--dataset", help="dataset id")] = None,
    base_model: Annotated[str | None, typer.Option("--base-model", help="base model name")] = None,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Lineage the other way: every version trained on a dataset and/or a base model."""
    if dataset is None and base_model is None:
        raise typer.BadParameter("give --dataset or --base-model")
    res = _run(lambda: _client(url, token).get("/api/lineage", dataset_id=dataset, base_model=base_model))
    rows = [{"task": v["task"], "version": v["version"], "method": v["method"], "origin": v["origin"],
             "parent": f"v{v['parent']['version']}" if v["parent"] else ""} for v in res["items"]]
    _emit(res if as_json else rows, as_json, None if as_json else ["task", "version", "method", "origin", "parent"])


@app.command("import")
def import_(
    task: str, directory: Path,
    base_model: Annotated[str, typer.Option("--base-model", help="the base model it was trained on")],
    metric: Annotated[list[str] | None, typer.Option("--metric", help="name=value, e.g. accuracy=0.91")] = None,
    description: str = "",
    parent: Annotated[int | None, typer.Option("--parent", help="record this version as its parent")] = None,
    url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Register an adapter trained elsewhere (PEFT directory, safetensors only) as a new version."""
    metrics = {k: float(v) for k, v in _kv(metric or [], "--metric").items()}
    with console.status(f"uploading {directory} ..."):
        v = _run(lambda: _client(url, token).import_adapter(task, directory, base_model=base_model, metrics=metrics,
                                                            description=description, parent_version=parent))
    console.print(f"[green]imported {v['task']} v{v['version']} ({v['method']})[/green]")
    _emit(v, as_json, ["task", "version", "origin", "method", "base_model", "trainable_params"])


@tokens_app.command("create")
def tokens_create(name: str, scope: Annotated[list[str], typer.Option("--scope")],
                  prefix: Annotated[list[str] | None, typer.Option("--prefix")] = None,
                  url: UrlOpt = None, token: TokenOpt = None) -> None:
    t = _run(lambda: _client(url, token).post("/api/tokens", json={"name": name, "scopes": scope,
                                                                     "prefixes": prefix or []}))
    console.print("store this token now; it is not shown again:")
    out.print(t["token"])


if __name__ == "__main__":
    app()
