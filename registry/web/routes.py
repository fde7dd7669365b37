"""The web pages: browse the registry, watch jobs train, promote versions, submit training.

Pages call the same services and repositories as the JSON API (no SQL here) and use the API's
``SessionDep`` request scope, so a page write commits exactly like an API write. Writes need a
signed-in token (cookie) and a CSRF token; reads follow ``settings.public_reads``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, unquote, urlencode

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from registry import methods
from registry.api.deps import SessionDep, SettingsDep, StoreDep
from registry.api.ratelimit import check_submit_rate
from registry.api.uploads import plain_filename, spooled
from registry.auth.service import ANONYMOUS, Principal, authenticate, require
from registry.basemodels import repository as base_models_repo
from registry.basemodels import service as base_models
from registry.datasets import repository as datasets_repo
from registry.datasets import service as datasets
from registry.datasets.parsing import FORMATS, ColumnMapping
from registry.errors import Forbidden, InvalidInput, NotFound, RegistryError, Unauthorized
from registry.jobs import repository as jobs_repo
from registry.jobs import service as jobs
from registry.jobs.schemas import HyperParameters, JobCreate
from registry.models import AdapterVersion, Job, JobState, Task
from registry.settings import Settings
from registry.tasks import repository as tasks_repo
from registry.tasks import service as tasks
from registry.versions import repository as versions_repo
from registry.versions import service as versions
from registry.web import charts, security

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
JOB_STATES = [s.value for s in JobState]


# -- template filters ------------------------------------------------------------------------------
def _filesize(n: Any) -> str:
    try:
        v = float(n)
    except (TypeError, ValueError):
        return "—"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(v) < 1024 or unit == "TB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} TB"


def _count(n: Any) -> str:
    try:
        v = float(n)
    except (TypeError, ValueError):
        return "—"
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.1f}{suffix}".replace(".0" + suffix, suffix)
    return f"{v:.0f}"


def _pct(v: Any, digits: int = 2) -> str:
    try:
        return f"{float(v) * 100:.{digits}f}%"
    except (TypeError, ValueError):
        return "—"


def _metric(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return str(v) if v is not None else "—"
    if isinstance(v, int) or (v.is_integer() and abs(v) >= 1):
        return f"{int(v):,}"
    return f"{v:.4f}"


def _dt(v: datetime | None) -> Markup:
    if v is None:
        return Markup("—")
    v = v.astimezone(UTC)
    return Markup('<time datetime="{}">{}</time>').format(v.isoformat(), v.strftime("%Y-%m-%d %H:%M UTC"))


def _ago(v: datetime | None) -> str:
    if v is None:
        return "—"
    s = (datetime.now(UTC) - v.astimezone(UTC)).total_seconds()
    if s < 60:
        return "just now"
    for div, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if s >= div:
            return f"{int(s // div)} {unit} ago"
    return "just now"


QUALITY_METRICS = ("accuracy", "macro_f1", "f1", "pearson", "spearman", "matthews_corr")


def _key_metrics(metrics: dict[str, Any], n: int = 3) -> list[tuple[str, Any]]:
    """The few metrics worth a table cell: quality metrics first, then eval loss; never timings."""
    order = (*QUALITY_METRICS, "eval_loss", "neg_eval_loss")
    keys = [k for k in order if isinstance(metrics.get(k), int | float)]
    keys += [k for k, v in metrics.items() if k not in keys and isinstance(v, int | float)
             and not k.startswith("train_")]
    return [(k, metrics[k]) for k in keys[:n]]


def _pretty(v: Any) -> str:
    return json.dumps(v, indent=2, sort_keys=True, default=str)


templates.env.filters.update(filesize=_filesize, count=_count, pct=_pct, metric=_metric, dt=_dt, ago=_ago,
                             pretty=_pretty, key_metrics=_key_metrics)
templates.env.globals.update(JOB_STATES=JOB_STATES)


# -- errors as pages -------------------------------------------------------------------------------
class Unavailable(RegistryError):
    status = 503
    title = "Service unavailable"


class LoginRequired(Exception):
    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


def _login_url(next_url: str) -> str:
    return "/login?" + urlencode({"next": next_url})


def _error_page(request: Request, exc: RegistryError) -> Response:
    if isinstance(exc, Unauthorized) and request.method == "GET":
        return RedirectResponse(_login_url(_here(request)), status_code=303)
    titles = {401: "Please log in", 403: "Not allowed", 404: "Not found", 409: "Conflict", 429: "Slow down",
              503: "Temporarily unavailable"}
    response = templates.TemplateResponse(
        request, "error.html",
        {"status": exc.status, "heading": titles.get(exc.status, exc.title),
         "detail": exc.detail[:1].upper() + exc.detail[1:],
         "login_next": _here(request) if request.method == "GET" else "/", **_chrome(request, None)},
        status_code=exc.status,
    )
    response.headers.update(SECURITY_HEADERS)
    if exc.status == 429 and exc.extra.get("retry_after"):
        response.headers["Retry-After"] = str(exc.extra["retry_after"])
    return response


class PageRoute(APIRoute):
    """Renders registry errors raised by a page (after the session rolled back) as HTML pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired as exc:
                return RedirectResponse(_login_url(exc.next_url), status_code=303)
            except RegistryError as exc:
                return _error_page(request, exc)
            except RequestValidationError as exc:  # e.g. /jobs/abc: a page that cannot exist
                if request.method == "GET":
                    return _error_page(request, NotFound("there is no such page"))
                first = exc.errors()[0] if exc.errors() else {}
                return _error_page(request, InvalidInput(f"the form is malformed: {first.get('msg', 'invalid')}"))
            except OperationalError:
                log.exception("database error on %s %s", request.method, request.url.path)
                return _error_page(request, Unavailable("the database is busy or unavailable; try again"))

        return page_handler


router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _here(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


# -- page context --------------------------------------------------------------------------------
def _chrome(request: Request, principal: Principal | None) -> dict[str, Any]:
    """What the base layout needs: who is signed in, the CSRF token, a one-shot flash message."""
    if principal is None:  # error pages: no database access
        principal = getattr(request.state, "web_principal", None) or ANONYMOUS
    flash = request.cookies.get("ar_flash")
    return {
        "principal": principal,
        "signed_in": principal is not ANONYMOUS,
        "csrf_token": security.csrf_token(request),
        "flash": unquote(flash)[:300] if flash else None,
        "path": request.url.path,
    }


# Pages load nothing from elsewhere and run no inline script or style: a strict policy costs nothing.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
                               "object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def render(request: Request, session: Session, settings: Settings, template: str, ctx: dict[str, Any],
           *, status: int = 200) -> Response:
    principal = security.principal_from_cookie(request, session, settings)
    response = templates.TemplateResponse(request, template, {**_chrome(request, principal), **ctx},
                                          status_code=status)
    security.apply_cookies(request, response)
    if request.cookies.get("ar_flash"):
        response.delete_cookie("ar_flash", path="/")
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.update(SECURITY_HEADERS)
    return response


def redirect(url: str, *, flash: str | None = None) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    if flash:
        response.set_cookie("ar_flash", quote(flash), max_age=60, httponly=True, samesite="strict", path="/")
    return response


def read_guard(request: Request, session: SessionDep, settings: SettingsDep) -> Principal:
    """Pages follow settings.public_reads: private registries send anonymous visitors to log in."""
    principal = security.principal_from_cookie(request, session, settings)
    if not settings.public_reads and not principal.has("read"):
        raise LoginRequired(_here(request))
    return principal


ReadDep = Annotated[Principal, Depends(read_guard)]


def write_guard(request: Request, session: Session, settings: Settings, csrf: str | None,
                *, task_name: str | None = None) -> Principal:
    principal = security.principal_from_cookie(request, session, settings)
    if principal is ANONYMOUS:
        raise Unauthorized("log in with a token that has the 'write' scope to do this")
    security.check_csrf(request, csrf)
    require(principal, "write", task_name=task_name)
    return principal


# -- home ----------------------------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
def home(request: Request, session: SessionDep, settings: SettingsDep, _: ReadDep) -> Response:
    by_state = jobs_repo.count_by_state(session)
    counts = {
        "Base models": (base_models_repo.count(session), "/base-models"),
        "Tasks": (tasks_repo.count(session), "/tasks"),
        "Adapter versions": (versions_repo.count(session), "/tasks"),
        "Datasets": (datasets_repo.count(session), None),
        "Jobs": (sum(by_state.values()), "/jobs"),
    }
    recent_jobs = jobs_repo.list_page(session, state=None, task_id=None, method=None, limit=8, cursor=None).items
    promotions = []
    for ev in versions_repo.recent_alias_events(session, limit=8):
        to_v = versions_repo.get(session, ev.to_version_id) if ev.to_version_id else None
        from_v = versions_repo.get(session, ev.from_version_id) if ev.from_version_id else None
        task = to_v.task if to_v else (from_v.task if from_v else None)
        promotions.append({"event": ev, "to": to_v, "from": from_v, "task": task})
    return render(request, session, settings, "home.html", {
        "counts": counts, "by_state": by_state, "recent_jobs": recent_jobs, "promotions": promotions,
        "recent_versions": versions_repo.recent(session, limit=6),
    })


# -- base models ---------------------------------------------------------------------------------
@router.get("/base-models", response_class=HTMLResponse)
def base_model_list(request: Request, session: SessionDep, settings: SettingsDep, _: ReadDep,
                    q: Annotated[str | None, Query(max_length=200)] = None,
                    cursor: Annotated[str | None, Query(max_length=500)] = None) -> Response:
    page = base_models_repo.list_page(session, q=q, limit=50, cursor=cursor)
    return render(request, session, settings, "base_models.html",
                  {"items": page.items, "next_cursor": page.next_cursor, "q": q or ""})


@router.get("/base-models/{name}", response_class=HTMLResponse)
def base_model_detail(request: Request, session: SessionDep, settings: SettingsDep, _: ReadDep,
                      name: str) -> Response:
    bm = base_models.get_by_name(session, name)
    return render(request, session, settings, "base_model.html", {
        "bm": bm, "tasks": base_models_repo.tasks_with_adapters(session, bm.id),
    })


# -- tasks ---------------------------------------------------------------------------------------
def _task_summary(session: Session, task: Task) -> dict[str, Any]:
    latest = versions_repo.latest(session, task.id)
    return {
        "task": task, "versions": tasks_repo.version_count(session, task.id), "latest": latest,
        "aliases": {a.name: a.version.number for a in versions_repo.aliases_for_task(session, task.id)},
    }


@router.get("/tasks", response_class=HTMLResponse)
def task_list(request: Request, session: SessionDep, settings: SettingsDep, _: ReadDep,
              q: Annotated[str | None, Query(max_length=200)] = None,
              type: Annotated[str | None, Query(max_length=32)] = None,
              cursor: Annotated[str | None, Query(max_length=500)] = None) -> Response:
    type_ = type if type in methods.TASK_TYPES else None
    page = tasks_repo.list_page(session, q=q or None, tag=None, type_=type_, limit=50, cursor=cursor)
    return render(request, session, settings, "tasks.html", {
        "items": [_task_summary(session, t) for t in page.items], "next_cursor": page.next_cursor,
        "q": q or "", "type": type_ or "", "task_types": methods.TASK_TYPES,
    })


def _aliases_by_version(session: Session, task_id: int) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for a in versions_repo.aliases_for_task(session, task_id):
        out.setdefault(a.version_id, []).append(a.name)
    return out


def _metric_chart(task: Task, items: list[AdapterVersion]) -> Markup:
    ordered = sorted(items, key=lambda v: v.number)
    def present(k: str) -> bool:
        return any(isinstance(v.metrics.get(k), int | float) for v in ordered)

    keys = [k for k in QUALITY_METRICS if present(k)][:3]
    if not keys:  # regression without correlations, causal LM: plot the loss
        keys = [k for k in ("eval_loss", "neg_eval_loss") if present(k)][:1]
    series = [charts.Series(k, [(float(v.number), float(v.metrics[k])) for v in ordered
                                if isinstance(v.metrics.get(k), int | float)]) for k in keys[:3]]
    return charts.line_chart(series or [charts.Series("metric", [])], title=f"{task.name}: metrics by version",
                             x_label="version", y_label=keys[0] if len(keys) == 1 else "metric",
                             x_integer=True, empty_text="No versions with metrics yet")


def pull_snippets(request: Request, task: str, alias: str | None) -> dict[str, str]:
    base = str(request.base_url).rstrip("/")
    if alias:
        py_args, cli_args, query = f'"{task}", alias="{alias}"', f" --alias {alias}", f"?alias={quote(alias)}"
    else:
        py_args, cli_args, query = f'"{task}"', "", ""
    return {
        "Python": (f"from registry import client\n\npath = client.pull({py_args})   # verified, cached files\n"
                   f"model = client.load({py_args})  # base + adapter + head\n"
                   f'model.predict(["an example sentence"])'),
        "CLI": f"adapter-registry pull {task}{cli_args}",
        "curl": f'curl -s "{base}/api/tasks/{quote(task)}/adapter{query}"',
    }


@router.get("/tasks/{name}", response_class=HTMLResponse)
def task_detail(request: Request, session: SessionDep, settings: SettingsDep, _: ReadDep, name: str) -> Response:
    task = tasks.get_by_name(session, name)
    items = versions_repo.list_page(session, task_id=task.id, limit=200, cursor=None).items
    by_version = _aliases_by_version(session, task.id)
    alias_names = sorted(a for names in by_version.values() for a in names)
    alias = "production" if "production" in alias_names else (alias_names[0] if alias_names else None)
    numbers = {v.id: v.number for v in items}
    history = [{"e": e, "from": numbers.get(e.from_version_id or -1), "to": numbers.get(e.to_version_id or -1)}
               for e in versions_repo.alias_events(session, task.id, limit=20)]
    return render(request, session, settings, "task.html", {
        "task": task, "versions": items, "by_version": by_version, "alias": alias, "alias_names": alias_names,
        "snippets": pull_snippets(request, task.name, alias), "chart": _metric_chart(task, items),
        "history": history,
        "datasets": datasets_repo.list_page(session, task_id=task.id, limit=20, cursor=None).items,
        "jobs": jobs_repo.list_page(session, state=None, task_id=task.id, method=None, limit=10,
                                    cursor=None).items,
    })


# -- versions ------------------------------------------------------------------------------------
def lineage_svg(session: Session, v: AdapterVersion) -> Markup:
    g = charts.Graph()
    cur = f"v{v.id}"
    g.add(charts.Node(cur, f"{v.task.name} v{v.number}", v.method, "current",
                      f"/tasks/{quote(v.task.name)}/versions/{v.number}"))
    bm = g.add(charts.Node(f"b{v.base_model_id}", v.base_model.name, v.base_model.architecture, "base_model",
                           f"/base-models/{quote(v.base_model.name)}"))
    inputs = [bm.id]
    if v.dataset is not None:
        ds = g.add(charts.Node(f"d{v.dataset.id}", v.dataset.name or f"dataset {v.dataset.id}",
                               f"{v.dataset.num_rows:,} rows", "dataset", f"/datasets/{v.dataset.id}"))
        inputs.append(ds.id)
    chain = versions.ancestry(session, v, max_depth=4)
    for older in chain:
        g.add(charts.Node(f"v{older.id}", f"{older.task.name} v{older.number}", older.method, "version",
                          f"/tasks/{quote(older.task.name)}/versions/{older.number}"))
    if chain:
        inputs.append(f"v{chain[0].id}")
        for newer, older in zip(chain, chain[1:], strict=False):
            g.link(f"v{older.id}", f"v{newer.id}")
    if v.job is not None:
        job = g.add(charts.Node(f"j{v.job.id}", f"job #{v.job.id}", v.job.state, "job", f"/jobs/{v.job.id}"))
        for i in inputs:
            g.link(i, job.id)
        g.link(job.id, cur)
    else:
        for i in inputs:
            g.link(i, cur)
    for child in versions_repo.children(session, v.id)[:8]:
        g.add(charts.Node(f"v{child.id}", f"{child.task.name} v{child.number}", child.method, "version",
                          f"/tasks/{quote(child.task.name)}/versions/{child.number}"))
        g.link(cur, f"v{child.id}")
    return charts.lineage_graph(g, title=f"Lineage of {v.task.name} v{v.number}")


def _version_ctx(session: Session, task: Task, v: AdapterVersion) -> dict[str, Any]:
    by_version = _aliases_by_version(session, task.id)
    job = v.job
    eval_chart = None
    if job is not None and job.progress.get("history"):
        eval_chart = _loss_chart(job)
    return {
        "task": task, "v": v, "aliases": by_version.get(v.id, []),
        "all_aliases": sorted(a for names in by_version.values() for a in names),
        "lineage": lineage_svg(session, v), "children": versions_repo.children(session, v.id),
        "loss_chart": eval_chart, "form_errors": {}, "alias_value": "production",
    }


@router.get("/tasks/{name}/versions/{number}", response_class=HTMLResponse)
def version_detail(request: Request, session: SessionDep, settings: SettingsDep, _: ReadDep, name: str,
                   number: int) -> Response:
    task = tasks.get_by_name(session, name)
    v = versions.resolve(session, task, version=number)
    return render(request, session, settings, "version.html", _version_ctx(session, task, v))


@router.post("/tasks/{name}/versions/{number}/promote", response_class=HTMLResponse)
def version_promote(request: Request, session: SessionDep, settings: SettingsDep, name: str, number: int,
                    alias: Annotated[str, Form(max_length=200)] = "",
                    csrf_token: Annotated[str | None, Form(max_length=200)] = None) -> Response:
    principal = write_guard(request, session, settings, csrf_token, task_name=name)
    task = tasks.get_by_name(session, name)
    v = versions.resolve(session, task, version=number)
    try:
        versions.set_alias(session, task, alias.strip(), number, actor=principal.name)
    except InvalidInput as exc:
        session.rollback()
        ctx = _version_ctx(session, task, v)
        ctx["form_errors"] = {"alias": exc.detail}
        ctx["alias_value"] = alias
        return render(request, session, settings, "version.html", ctx, status=422)
    return redirect(f"/tasks/{quote(task.name)}/versions/{number}",
                    flash=f"Alias “{alias.strip()}” now points at {task.name} v{number}.")


# -- jobs ----------------------------------------------------------------------------------------
@router.get("/jobs", response_class=HTMLResponse)
def job_list(request: Request, session: SessionDep, settings: SettingsDep, _: ReadDep,
             state: Annotated[str | None, Query(max_length=16)] = None,
             task: Annotated[str | None, Query(max_length=200)] = None,
             cursor: Annotated[str | None, Query(max_length=500)] = None) -> Response:
    state_ = state if state in JOB_STATES else None
    task_obj = tasks_repo.get_by_name(session, task.strip()) if task and task.strip() else None
    unknown_task = bool(task and task.strip() and task_obj is None)
    items: list[Job] = []
    next_cursor = None
    if not unknown_task:
        page = jobs_repo.list_page(session, state=state_, task_id=task_obj.id if task_obj else None, method=None,
                                   limit=50, cursor=cursor)
        items, next_cursor = page.items, page.next_cursor
    return render(request, session, settings, "jobs.html", {
        "items": items, "next_cursor": next_cursor, "state": state_ or "", "task": (task or "").strip(),
        "unknown_task": unknown_task, "by_state": jobs_repo.count_by_state(session),
        "task_names": [t.name for t in tasks_repo.list_page(session, q=None, tag=None, type_=None, limit=200,
                                                              cursor=None).items],
    })


def _loss_chart(job: Job) -> Markup:
    history = job.progress.get("history") or []
    pts = [(float(h["step"]), float(h["loss"])) for h in history
           if isinstance(h.get("loss"), int | float) and isinstance(h.get("step"), int | float)]
    series = [charts.Series("training loss", pts)]
    evals = job.progress.get("eval") or []
    eval_pts = [(float(e["step"]), float(e["eval_loss"])) for e in evals
                if isinstance(e.get("eval_loss"), int | float) and isinstance(e.get("step"), int | float)]
    if eval_pts:
        series.append(charts.Series("eval loss", eval_pts, dashed=True))
    return charts.line_chart(series, title=f"Job {job.id}: loss by step", x_label="step", y_label="loss",
                             x_integer=True, empty_text="Waiting for the first training steps…")


def _job_live_ctx(request: Request, session: Session, settings: Settings, job: Job) -> dict[str, Any]:
    p = job.progress or {}
    step, total = p.get("step") or 0, p.get("total_steps")
    evals = p.get("eval") or []
    eval_keys = sorted({k for e in evals for k in e if k != "step"})
    return {
        "job": job, "terminal": JobState(job.state).terminal, "step": step, "total": total,
        "fraction": (step / total) if total else None, "epoch": p.get("epoch"), "loss": p.get("loss"),
        "loss_chart": _loss_chart(job), "evals": evals, "eval_keys": eval_keys, "logs": (job.logs or [])[-40:],
        "principal": security.principal_from_cookie(request, session, settings),
        "csrf_token": security.csrf_token(request),
    }


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_detail(request: Request, session: SessionDep, settings: SettingsDep, _: ReadDep, job_id: int) -> Response:
    job = jobs.get(session, job_id)
    return render(request, session, settings, "job.html", _job_live_ctx(request, session, settings, job))


@router.get("/jobs/{job_id}/live")
def job_live(request: Request, session: SessionDep, settings: SettingsDep, _: ReadDep, job_id: int) -> Response:
    """What the job page polls: state plus the re-rendered live section (chart drawn on the server)."""
    job = jobs.get(session, job_id)
    ctx = _job_live_ctx(request, session, settings, job)
    html = templates.get_template("_job_live.html").render({**ctx, "request": request})
    p = job.progress or {}
    return JSONResponse({"id": job.id, "state": job.state, "terminal": ctx["terminal"], "step": ctx["step"],
                         "total_steps": ctx["total"], "loss": p.get("loss"), "html": html},
                        headers={"Cache-Control": "no-store"})


@router.post("/jobs/{job_id}/cancel", response_class=HTMLResponse)
def job_cancel(request: Request, session: SessionDep, settings: SettingsDep, job_id: int,
               csrf_token: Annotated[str | None, Form(max_length=200)] = None) -> Response:
    principal = write_guard(request, session, settings, csrf_token)
    job = jobs.get(session, job_id)
    require(principal, "write", task_name=job.task.name)
    jobs.cancel(session, job_id, actor=principal.name)
    msg = ("Job cancelled." if job.state == JobState.cancelled.value
           else "Cancellation requested; the worker stops at its next check.")
    return redirect(f"/jobs/{job_id}", flash=msg)


# -- datasets ------------------------------------------------------------------------------------
@router.get("/datasets/{dataset_id}", response_class=HTMLResponse)
def dataset_detail(request: Request, session: SessionDep, settings: SettingsDep, _: ReadDep,
                   dataset_id: int) -> Response:
    ds = datasets.get(session, dataset_id)
    label_charts = []
    for split in ("train", "dev"):
        counts = (ds.label_counts or {}).get(split) or {}
        if counts:
            items = sorted(((str(k), float(v)) for k, v in counts.items()), key=lambda kv: (-kv[1], kv[0]))
            label_charts.append((split, charts.bar_chart(
                items, title=f"Label distribution of the {split} split",
                x_label="rows", y_label="label")))
    trained = versions_repo.list_page(session, dataset_id=ds.id, limit=200, cursor=None).items
    return render(request, session, settings, "dataset.html",
                  {"ds": ds, "label_charts": label_charts, "versions": trained})


# -- submit --------------------------------------------------------------------------------------
HP_FIELDS: tuple[tuple[str, str, str], ...] = (
    # name, label, help
    ("learning_rate", "Learning rate", "Adapter learning rate, > 0 and ≤ 1."),
    ("epochs", "Epochs", "Passes over the training split."),
    ("batch_size", "Batch size", "Rows per step."),
    ("max_length", "Max length", "Tokens per example (longer ones are truncated)."),
    ("max_steps", "Max steps", "Optional cap on optimizer steps."),
    ("warmup_ratio", "Warm-up ratio", "Share of steps with a rising learning rate."),
    ("weight_decay", "Weight decay", ""),
    ("seed", "Seed", ""),
    ("eval_every", "Evaluate every (steps)", "Optional; evaluates on the dev split."),
)
OPTIONAL_HP = {"max_steps", "eval_every"}


def _submit_defaults() -> dict[str, str]:
    hp = HyperParameters()
    values = {k: "" if getattr(hp, k) is None else str(getattr(hp, k)) for k, _, _ in HP_FIELDS}
    values.update(task="", task_type="single_label", base_model="", method="houlsby", method_config="",
                  dataset_id="", parent_version="", map_text="text", map_label="label", map_text_pair="",
                  has_header="on", format="", dataset_name="")
    return values


def _submit_ctx(session: Session, values: dict[str, str], errors: dict[str, str]) -> dict[str, Any]:
    return {
        "values": values, "errors": errors, "hp_fields": HP_FIELDS, "optional_hp": OPTIONAL_HP,
        "methods": methods.METHOD_NAMES, "task_types": methods.TASK_TYPES, "formats": FORMATS,
        "base_models": base_models_repo.list_page(session, q=None, limit=200, cursor=None).items,
        "task_names": [t.name for t in tasks_repo.list_page(session, q=None, tag=None, type_=None, limit=200,
                                                              cursor=None).items],
    }


@router.get("/submit", response_class=HTMLResponse)
def submit_form(request: Request, session: SessionDep, settings: SettingsDep, _: ReadDep,
                task: Annotated[str | None, Query(max_length=200)] = None,
                base_model: Annotated[str | None, Query(max_length=200)] = None,
                parent_version: Annotated[int | None, Query(ge=1)] = None) -> Response:
    values = _submit_defaults()
    if task:
        values["task"] = task
        t = tasks_repo.get_by_name(session, task)
        if t is not None:
            values["task_type"] = t.type
    if base_model:
        values["base_model"] = base_model
    if parent_version:
        values["parent_version"] = str(parent_version)
        t = tasks_repo.get_by_name(session, task) if task else None
        pv = versions_repo.get_by_number(session, t.id, parent_version) if t is not None else None
        if pv is not None:  # a warm start keeps the parent's method, base model and data
            values.update(method=pv.method, base_model=pv.base_model.name,
                          dataset_id=str(pv.dataset_id) if pv.dataset_id else "")
            values.update({k: str(v) for k, v in pv.hyperparameters.items()
                           if k in values and v is not None})
    return render(request, session, settings, "submit.html", _submit_ctx(session, values, {}))


# service field -> form field
_FIELD_MAP = {
    "name": "task", "type": "task_type", "labels": "map_label", "mapping.text": "map_text",
    "mapping.label": "map_label", "mapping.text_pair": "map_text_pair", "mapping.response": "map_text",
    "mapping": "map_text", "train": "train", "format": "format", "dataset_id": "dataset_id",
    "parent_version": "parent_version", "base_model": "base_model", "method": "method", "task": "task",
}


def _form_field(field: str | None, *, phase: str) -> str:
    if not field:
        return "_form"
    if field.startswith("method_config"):
        return "method_config"
    if field.startswith("hyperparameters."):
        return field.split(".", 1)[1]
    if phase == "dataset" and field == "name":
        return "dataset_name"
    return _FIELD_MAP.get(field, "_form")


@router.post("/submit", response_class=HTMLResponse)
def submit_post(
    request: Request, session: SessionDep, settings: SettingsDep, store: StoreDep,
    csrf_token: Annotated[str | None, Form(max_length=200)] = None,
    task: Annotated[str, Form(max_length=200)] = "",
    task_type: Annotated[str, Form(max_length=32)] = "single_label",
    base_model: Annotated[str, Form(max_length=200)] = "",
    method: Annotated[str, Form(max_length=32)] = "houlsby",
    method_config: Annotated[str, Form(max_length=20_000)] = "",
    dataset_id: Annotated[str, Form(max_length=20)] = "",
    parent_version: Annotated[str, Form(max_length=20)] = "",
    map_text: Annotated[str, Form(max_length=200)] = "",
    map_label: Annotated[str, Form(max_length=200)] = "",
    map_text_pair: Annotated[str, Form(max_length=200)] = "",
    has_header: Annotated[str, Form(max_length=8)] = "",
    format: Annotated[str, Form(max_length=8)] = "",
    dataset_name: Annotated[str, Form(max_length=200)] = "",
    learning_rate: Annotated[str, Form(max_length=40)] = "",
    epochs: Annotated[str, Form(max_length=40)] = "",
    batch_size: Annotated[str, Form(max_length=40)] = "",
    max_length: Annotated[str, Form(max_length=40)] = "",
    max_steps: Annotated[str, Form(max_length=40)] = "",
    warmup_ratio: Annotated[str, Form(max_length=40)] = "",
    weight_decay: Annotated[str, Form(max_length=40)] = "",
    seed: Annotated[str, Form(max_length=40)] = "",
    eval_every: Annotated[str, Form(max_length=40)] = "",
    train: Annotated[UploadFile | None, File()] = None,
    dev: Annotated[UploadFile | None, File()] = None,
) -> Response:
    principal = security.principal_from_cookie(request, session, settings)
    if principal is ANONYMOUS:
        raise Unauthorized("log in with a token that has the 'write' scope to submit training")
    security.check_csrf(request, csrf_token)
    values = {
        "task": task.strip(), "task_type": task_type, "base_model": base_model, "method": method,
        "method_config": method_config, "dataset_id": dataset_id.strip(), "parent_version": parent_version.strip(),
        "map_text": map_text.strip(), "map_label": map_label.strip(), "map_text_pair": map_text_pair.strip(),
        "has_header": "on" if has_header else "", "format": format, "dataset_name": dataset_name.strip(),
        "learning_rate": learning_rate.strip(), "epochs": epochs.strip(), "batch_size": batch_size.strip(),
        "max_length": max_length.strip(), "max_steps": max_steps.strip(), "warmup_ratio": warmup_ratio.strip(),
        "weight_decay": weight_decay.strip(), "seed": seed.strip(), "eval_every": eval_every.strip(),
    }
    errors: dict[str, str] = {}

    def fail(status: int = 422) -> Response:
        session.rollback()
        if train is not None and train.filename and "train" not in errors:
            errors.setdefault("train", "Choose the file again: browsers do not resend files after an error.")
        return render(request, session, settings, "submit.html", _submit_ctx(session, values, errors), status=status)

    train_file = train if train is not None and train.filename else None
    dev_file = dev if dev is not None and dev.filename else None

    # 1. Everything that needs no database: hyper-parameters, method config, numbers.
    hp_raw: dict[str, Any] = {k: values[k] for k, _, _ in HP_FIELDS if values[k] != ""}
    try:
        hp = HyperParameters.model_validate(hp_raw)
    except ValidationError as exc:
        for err in exc.errors():
            loc = str(err["loc"][0]) if err.get("loc") else "_form"
            errors.setdefault(loc, err["msg"])
        hp = None
    for k, _, _ in HP_FIELDS:
        if k not in OPTIONAL_HP and values[k] == "":
            errors.setdefault(k, "Required.")
    mc: dict[str, Any] = {}
    if method_config.strip():
        try:
            parsed = json.loads(method_config)
            if not isinstance(parsed, dict):
                raise ValueError
            mc = parsed
        except ValueError:
            errors["method_config"] = 'Must be a JSON object, e.g. {"reduction_factor": 16}.'
    if "method_config" not in errors:
        try:
            methods.validate_method_config(method, mc)
        except InvalidInput as exc:
            errors[_form_field(exc.field, phase="job")] = exc.detail
    ds_id: int | None = None
    if values["dataset_id"]:
        try:
            ds_id = int(values["dataset_id"])
            if ds_id < 1:
                raise ValueError
        except ValueError:
            errors["dataset_id"] = "Must be a dataset number (1 or more)."
    parent: int | None = None
    if values["parent_version"]:
        try:
            parent = int(values["parent_version"])
            if parent < 1:
                raise ValueError
        except ValueError:
            errors["parent_version"] = "Must be a version number (1 or more)."
    if not values["task"]:
        errors["task"] = "Required."
    if not base_model:
        errors["base_model"] = "Choose a base model."
    if train_file is None and ds_id is None:
        errors["train"] = "Upload a training file, or give the number of a dataset already uploaded."
    if train_file is not None and ds_id is not None:
        errors["dataset_id"] = "Either upload a file or reuse a dataset, not both."
    if train_file is not None and not values["map_text"]:
        errors["map_text"] = "Required: the column that holds the text."
    if errors or hp is None:
        return fail()

    # 2. Database checks that cost nothing: the base model and the task type.
    try:
        require(principal, "write", task_name=values["task"])
        check_submit_rate(principal.name, settings.submit_rate_per_minute)
    except RegistryError as exc:
        if exc.status == 429:
            errors["_form"] = exc.detail
            return fail(429)
        errors["task"] = exc.detail
        return fail(exc.status)
    phase = "task"
    try:
        bm = base_models.get_by_name(session, base_model)
        task_obj = tasks_repo.get_by_name(session, values["task"])
        if task_obj is None:
            if task_type not in bm.task_types:
                raise InvalidInput(f"base model {bm.name} does not support {task_type} tasks", field="type")
            task_obj = tasks.create(session, name=values["task"], type=task_type, actor=principal.name)
        elif task_obj.type not in bm.task_types:
            raise InvalidInput(f"base model {bm.name} ({bm.model_type}) does not support {task_obj.type} tasks",
                               field="base_model")
        if parent is not None:  # checked before the upload so a typo does not cost the user their file
            pv = versions_repo.get_by_number(session, task_obj.id, parent)
            if pv is None:
                raise InvalidInput(f"task {task_obj.name} has no version {parent}", field="parent_version")
            if pv.base_model_id != bm.id:
                raise InvalidInput(f"v{parent} was trained on {pv.base_model.name}, not {bm.name}",
                                   field="parent_version")
            if pv.method != method:
                raise InvalidInput(f"v{parent} uses method {pv.method}; a warm start keeps the method",
                                   field="parent_version")
        phase = "dataset"
        if train_file is not None:
            mapping = ColumnMapping(text=values["map_text"], label=values["map_label"] or None,
                                    text_pair=values["map_text_pair"] or None, has_header=bool(has_header))
            uploads = {"train": train_file} | ({"dev": dev_file} if dev_file is not None else {})
            names = {k: plain_filename(u, field=k) for k, u in uploads.items()}
            assert settings.work_dir is not None
            with spooled(uploads, settings.work_dir, max_bytes=settings.max_dataset_bytes) as paths:
                ds, _created = datasets.upload(
                    session, store, task=task_obj, train=(names["train"], paths["train"]),
                    dev=(names["dev"], paths["dev"]) if "dev" in paths else None, mapping=mapping,
                    fmt=values["format"] or None, name=values["dataset_name"] or None,
                    max_line_bytes=settings.max_line_bytes, work_dir=settings.work_dir, actor=principal.name,
                )
            ds_id = ds.id
        phase = "job"
        assert ds_id is not None
        body = JobCreate(task=task_obj.name, base_model=bm.name, dataset_id=ds_id, method=method,
                         method_config=mc, hyperparameters=hp, parent_version=parent)
        job, _ = jobs.submit(session, settings, body, actor=principal.name)
    except NotFound as exc:
        errors[_form_field(exc.field, phase=phase) if exc.field != "task" else "task"] = exc.detail
        return fail()
    except (InvalidInput, RegistryError) as exc:
        if isinstance(exc, Unauthorized | Forbidden):
            raise
        key = _form_field(exc.field, phase=phase)
        if phase == "dataset" and key == "_form":
            key = "train"
        errors[key] = exc.detail
        return fail(exc.status if exc.status in (409, 413, 422) else 422)
    return redirect(f"/jobs/{job.id}", flash=f"Job #{job.id} queued for {task_obj.name}.")


# -- login ---------------------------------------------------------------------------------------
def _safe_next(next_url: str | None) -> str:
    if next_url and next_url.startswith("/") and not next_url.startswith("//") and "\\" not in next_url:
        return next_url
    return "/"


def _embedded_home(settings: Settings) -> Path | None:
    return settings.home if settings.mode == "embedded" else None


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, session: SessionDep, settings: SettingsDep,
               next: Annotated[str | None, Query(max_length=500)] = None) -> Response:
    return render(request, session, settings, "login.html",
                  {"next": _safe_next(next), "errors": {}, "home": _embedded_home(settings)})


@router.post("/login", response_class=HTMLResponse)
def login_post(request: Request, session: SessionDep, settings: SettingsDep,
               token: Annotated[str, Form(max_length=500)] = "",
               next: Annotated[str, Form(max_length=500)] = "/",
               csrf_token: Annotated[str | None, Form(max_length=200)] = None) -> Response:
    security.check_csrf(request, csrf_token, login=True)
    token = token.strip()
    error = None
    if not token:
        error = "Paste an API token."
    else:
        try:
            principal = authenticate(session, settings, f"Bearer {token}")
        except Unauthorized as exc:
            error = exc.detail[:1].upper() + exc.detail[1:] + "."
    if error:
        return render(request, session, settings, "login.html",
                      {"next": _safe_next(next), "errors": {"token": error}, "home": _embedded_home(settings)},
                      status=401)
    response = redirect(_safe_next(next), flash=f"Signed in as {principal.name}.")
    security.set_session(request, response, token)
    return response


@router.post("/logout")
def logout(request: Request, csrf_token: Annotated[str | None, Form(max_length=200)] = None) -> Response:
    security.check_csrf(request, csrf_token)
    response = redirect("/", flash="Signed out.")
    security.clear_session(response)
    return response


def install(app: FastAPI) -> None:
    """Mount /static and the pages on the API app."""
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(router)
