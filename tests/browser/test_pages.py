"""Walk the web pages in a real browser: browse, log in, submit training, watch it, promote, cancel.

The tests run in file order and share one registry (see conftest.py): the submit test trains the
version that the promote and lineage tests use.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.a11y import check_a11y, check_phone_width

WebStack = Any  # the conftest fixture's dataclass

pytestmark = pytest.mark.browser

STATE: dict[str, Any] = {}


def visit(page: Any, path: str, shots: Path, name: str, *, phone: bool = True) -> None:
    response = page.goto(path)
    assert response is not None and response.status == 200, f"{path}: HTTP {response and response.status}"
    assert "default-src 'self'" in (response.headers.get("content-security-policy") or "")
    check_a11y(page)
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    if phone:
        check_phone_width(page, name, shots)


def login(page: Any, web: WebStack, next_path: str = "/") -> None:
    page.goto(f"/login?next={next_path}")
    page.fill("#token", web.token)
    page.click("form.card button[type=submit]")
    page.wait_for_url(re.compile(re.escape(next_path) + r"$"))
    assert "Signed in as" in page.inner_text("header")


def fill_job_form(page: Any, web: WebStack, *, task: str, **hp: str) -> None:
    page.fill("#task", task)
    page.select_option("#base_model", web.base_model)
    page.select_option("#method", "houlsby")
    defaults = {"learning_rate": "0.01", "epochs": "2", "batch_size": "8", "max_length": "32", "eval_every": "3"}
    for name, value in {**defaults, **hp}.items():
        page.fill(f"#{name}", value)


def wait_for_state(page: Any, states: tuple[str, ...], timeout_s: float) -> str:
    selector = " , ".join(f'#job-live .status-text [data-state="{s}"]' for s in states)
    page.wait_for_selector(selector, timeout=timeout_s * 1000)
    state: str = page.get_attribute("#job-live .status-text .badge", "data-state")
    return state


def test_walk_pages_anonymous(page: Any, web: WebStack, shots: Path) -> None:
    visit(page, "/", shots, "home-empty")
    assert page.inner_text("h1") == "Adapter Registry"
    visit(page, "/base-models", shots, "base-models")
    page.click(f"text={web.base_model}")
    page.wait_for_url(f"**/base-models/{web.base_model}")
    check_a11y(page)
    assert "BertModel" in page.inner_text("main")
    assert re.search(r"[0-9a-f]{64}", page.inner_text("main")), "the weights sha256 is shown"
    page.screenshot(path=str(shots / "base-model.png"), full_page=True)
    check_phone_width(page, "base-model", shots)
    visit(page, "/tasks", shots, "tasks-empty", phone=False)
    visit(page, "/jobs", shots, "jobs-empty", phone=False)
    visit(page, "/submit", shots, "submit-anonymous")
    assert "log in" in page.inner_text(".alert-warn").lower()
    visit(page, "/login", shots, "login")
    # keyboard: the first Tab reaches the skip link, which becomes visible with a focus outline
    page.goto("/tasks")
    page.keyboard.press("Tab")
    focused = page.evaluate("""() => {
        const el = document.activeElement; const r = el.getBoundingClientRect(); const cs = getComputedStyle(el);
        return {cls: el.className, top: r.top, outline: cs.outlineStyle, width: parseFloat(cs.outlineWidth)};
    }""")
    assert focused["cls"] == "skip-link" and focused["top"] >= 0
    assert focused["outline"] != "none" and focused["width"] >= 2
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # a missing page is a friendly HTML page, not JSON
    r = page.goto("/tasks/no-such-task")
    assert r.status == 404 and "does not exist" in page.inner_text("main")


def test_write_needs_login_and_csrf(page: Any, web: WebStack) -> None:
    # Without a session cookie a form POST is refused (and nothing is written).
    r = httpx.post(web.url + "/submit", data={"task": "x"}, follow_redirects=False)
    assert r.status_code == 401
    # A signed-in browser with a wrong CSRF token is refused too.
    login(page, web, "/submit")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    assert "ar_session" in cookies
    session_cookie = next(c for c in page.context.cookies() if c["name"] == "ar_session")
    assert session_cookie["httpOnly"] and session_cookie["sameSite"] == "Strict"
    r = httpx.post(web.url + "/submit", data={"task": "x", "csrf_token": "forged"},
                   cookies={"ar_session": cookies["ar_session"]}, follow_redirects=False)
    assert r.status_code == 403
    # A bad token is shown next to the token field.
    page.goto("/login")
    page.fill("#token", "ar_not-a-real-token")
    page.click("form.card button[type=submit]")
    err = page.locator("#token-error")
    assert "unknown or revoked" in err.inner_text()
    assert "token-error" in (page.get_attribute("#token", "aria-describedby") or "")


def test_validation_message_next_to_field(page: Any, web: WebStack, shots: Path) -> None:
    login(page, web, "/submit")
    fill_job_form(page, web, task="reviews", learning_rate="0")
    page.set_input_files("#train", str(web.dataset))
    page.click("form.submit-form button[type=submit]")
    page.wait_for_selector("#learning_rate-error")
    field = page.locator(".field:has(#learning_rate)")
    assert "greater than 0" in field.locator(".field-error").inner_text()
    assert page.get_attribute("#learning_rate", "aria-invalid") == "true"
    assert "learning_rate-error" in (page.get_attribute("#learning_rate", "aria-describedby") or "")
    # the user's values are kept
    assert page.input_value("#task") == "reviews"
    assert page.input_value("#learning_rate") == "0"
    assert page.input_value("#epochs") == "2"
    check_a11y(page)
    page.screenshot(path=str(shots / "submit-validation.png"), full_page=True)
    check_phone_width(page, "submit-validation", shots)
    # nothing was created
    assert httpx.get(web.url + "/api/jobs").json()["items"] == []


def test_submit_and_watch_job_train(page: Any, web: WebStack, shots: Path) -> None:
    login(page, web, "/submit")
    fill_job_form(page, web, task="reviews", epochs="3", eval_every="2")
    page.select_option("#task_type", "single_label")
    page.set_input_files("#train", str(web.dataset))
    page.set_input_files("#dev", str(web.dev))
    page.fill("#map_text", "sentence")
    page.fill("#map_label", "label")
    page.click("form.submit-form button[type=submit]")
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    STATE["job_id"] = job_id
    assert "queued" in page.inner_text(".flash").lower()
    check_a11y(page)
    # the page polls and redraws while the job trains, then shows the registered version
    state = wait_for_state(page, ("succeeded", "failed"), timeout_s=90)
    if state != "succeeded":
        log = (web.logs / "worker.log").read_text()[-4000:]
        pytest.fail(f"job {job_id} ended {state}: {page.inner_text('#job-live')}\n{log}")
    assert "succeeded" in page.inner_text("#job-announce"), "the state change is announced to screen readers"
    chart = page.locator("#loss-chart svg")
    assert chart.get_attribute("role") == "img"
    assert chart.locator("g.series path").count() >= 1, "the loss curve is drawn"
    assert chart.locator("g.series circle").count() >= 3
    assert "loss" in (chart.locator("title").first.text_content() or "").lower()
    assert page.locator("#job-live table").count() == 1, "eval metrics table"
    assert "accuracy" in page.inner_text("#job-live table")
    assert page.locator("#job-live pre.logs").count() == 1
    assert page.locator("#job-live button:has-text('Cancel job')").count() == 0
    check_a11y(page)
    page.screenshot(path=str(shots / "job-succeeded.png"), full_page=True)
    check_phone_width(page, "job-succeeded", shots)
    page.click("#job-version-link")
    page.wait_for_url("**/tasks/reviews/versions/1")
    STATE["version_url"] = page.url


def test_version_page_promote_and_lineage(page: Any, web: WebStack, shots: Path) -> None:
    if "version_url" not in STATE:
        pytest.skip("needs the trained version")
    login(page, web, "/tasks/reviews/versions/1")
    check_a11y(page)
    main = page.inner_text("main")
    assert "adapter_model.safetensors" in main and re.search(r"[0-9a-f]{64}", main)
    assert "accuracy" in main
    lineage = page.locator("svg.lineage")
    assert lineage.count() == 1
    assert lineage.locator("a").count() >= 3  # base model, dataset, job
    page.screenshot(path=str(shots / "version.png"), full_page=True)
    check_phone_width(page, "version", shots)

    # an invalid alias is refused next to the field
    page.fill("#alias", "latest")
    page.click("button:has-text('Promote v1')")
    page.wait_for_selector("#alias-error")
    assert "reserved" in page.inner_text("#alias-error")
    # promote
    page.fill("#alias", "production")
    page.click("button:has-text('Promote v1')")
    page.wait_for_selector(".flash")
    assert "production" in page.inner_text(".flash")
    assert page.locator(".page-head .alias-tag", has_text="production").count() == 1
    r = httpx.get(web.url + "/api/tasks/reviews/adapter", params={"alias": "production"})
    assert r.status_code == 200 and r.json()["version"] == 1

    # follow the lineage links
    page.click("svg.lineage a.node-base_model")
    page.wait_for_url(f"**/base-models/{web.base_model}")
    assert "reviews" in page.inner_text("main"), "the base model lists the task that has adapters for it"
    page.go_back()
    page.click("svg.lineage a.node-dataset")
    page.wait_for_url(re.compile(r"/datasets/\d+$"))
    check_a11y(page)
    assert page.locator("svg.bar-chart").count() >= 1
    assert "positive" in (page.locator("svg.bar-chart desc").first.text_content() or "")
    assert "reviews v1" in page.inner_text("main"), "the dataset lists the versions trained on it"
    page.screenshot(path=str(shots / "dataset.png"), full_page=True)
    check_phone_width(page, "dataset", shots)
    page.go_back()
    page.click("svg.lineage a.node-job")
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    assert int(page.url.rsplit("/", 1)[1]) == STATE["job_id"]


def test_warm_start_from_version_page_draws_parent_and_child(page: Any, web: WebStack, shots: Path) -> None:
    if "version_url" not in STATE:
        pytest.skip("needs the trained version")
    login(page, web, "/tasks/reviews/versions/1")
    page.click("text=Warm-start a new version from v1")
    page.wait_for_url(re.compile(r"/submit\?"))
    assert page.input_value("#task") == "reviews"
    assert page.input_value("#parent_version") == "1"
    assert page.input_value("#base_model") == web.base_model
    dataset_id = httpx.get(web.url + "/api/datasets").json()["items"][0]["id"]
    page.fill("#dataset_id", str(dataset_id))
    for name, value in {"learning_rate": "0.01", "epochs": "2", "batch_size": "8", "max_length": "32",
                        "eval_every": "3"}.items():
        page.fill(f"#{name}", value)
    page.click("form.submit-form button[type=submit]")
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    assert wait_for_state(page, ("succeeded", "failed"), timeout_s=60) == "succeeded"
    page.click("#job-version-link")
    page.wait_for_url("**/tasks/reviews/versions/2")
    parent = page.locator("svg.lineage a.node-version")
    assert parent.count() == 1 and "v1" in (parent.get_attribute("aria-label") or "")
    page.screenshot(path=str(shots / "version-warm-start.png"), full_page=True)
    parent.click()
    page.wait_for_url("**/tasks/reviews/versions/1")
    child = page.locator("svg.lineage a.node-version")
    assert child.count() == 1 and "v2" in (child.get_attribute("aria-label") or "")
    assert "v2" in page.inner_text(".lineage-list")


def test_task_page_pull_snippets_and_search(page: Any, web: WebStack, shots: Path) -> None:
    if "version_url" not in STATE:
        pytest.skip("needs the trained version")
    visit(page, "/tasks/reviews", shots, "task")
    text = page.inner_text("main")
    assert 'client.pull("reviews", alias="production")' in text
    assert "adapter-registry pull reviews --alias production" in text
    assert "/api/tasks/reviews/adapter?alias=production" in text
    assert page.locator("#versions-table tbody tr").count() == 2
    assert page.locator("svg.line-chart g.series circle").count() >= 2, "the metric is plotted for both versions"
    assert page.locator("svg.line-chart").count() == 1
    # search
    page.goto("/tasks")
    page.fill("#task-q", "rev")
    page.click("form.search button[type=submit]")
    page.wait_for_url(re.compile(r"q=rev"))
    assert page.locator("#task-table tbody tr").count() == 1
    page.fill("#task-q", "zzz")
    page.click("form.search button[type=submit]")
    page.wait_for_url(re.compile(r"q=zzz"))
    assert "No task matches" in page.inner_text("main")
    visit(page, "/tasks", shots, "tasks")
    # home shows counts, the job and the promotion
    visit(page, "/", shots, "home")
    home = page.inner_text("main")
    assert "Recently promoted" in home and "production" in home and f"#{STATE['job_id']}" in home


def test_cancel_job_and_filter_jobs(page: Any, web: WebStack, shots: Path) -> None:
    if "job_id" not in STATE:
        pytest.skip("needs the dataset from the submit test")
    login(page, web, "/submit")
    dataset_id = httpx.get(web.url + "/api/datasets").json()["items"][0]["id"]
    fill_job_form(page, web, task="reviews", epochs="100", batch_size="1", max_length="64", eval_every="100000")
    page.fill("#dataset_id", str(dataset_id))
    page.click("form.submit-form button[type=submit]")
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    # let it start (it may still be queued on a slow machine: cancelling works either way)
    # it starts, and the polling page redraws the loss curve while it trains
    wait_for_state(page, ("running",), timeout_s=30)
    page.wait_for_selector("#job-progress", timeout=30_000)
    page.wait_for_selector("#loss-chart svg g.series path", timeout=30_000)
    first = int(page.inner_text("#job-step"))
    page.wait_for_function(f"() => Number(document.getElementById('job-step').textContent) > {first}",
                           timeout=15_000)
    page.screenshot(path=str(shots / "job-running.png"), full_page=True)
    page.click("#cancel-btn")
    page.wait_for_url(re.compile(rf"/jobs/{job_id}$"))
    assert "cancel" in page.inner_text(".flash").lower()
    assert wait_for_state(page, ("cancelled",), timeout_s=30) == "cancelled"
    assert "no version was registered" in page.inner_text("#job-live")
    page.screenshot(path=str(shots / "job-cancelled.png"), full_page=True)

    # filters
    visit(page, "/jobs?state=cancelled", shots, "jobs-cancelled", phone=False)
    rows = page.locator("#jobs-table tbody tr")
    assert rows.count() == 1 and f"#{job_id}" in rows.first.inner_text()
    page.goto("/jobs")
    page.select_option("#f-state", "succeeded")  # JS submits on change
    page.wait_for_url(re.compile(r"state=succeeded"))
    assert f"#{STATE['job_id']}" in page.inner_text("#jobs-table")
    page.goto("/jobs?task=reviews")
    assert page.locator("#jobs-table tbody tr").count() == 3
    visit(page, "/jobs", shots, "jobs")


def test_failed_job_shows_error_plainly(page: Any, web: WebStack, shots: Path) -> None:
    """A failed job's error code and message are on the page (the row is written as a worker would)."""
    if "job_id" not in STATE:
        pytest.skip("needs the task and dataset from the submit test")
    from datetime import UTC, datetime

    from registry.db import session_scope
    from registry.models import Job
    from registry.settings import Settings

    with session_scope(Settings(home=web.home)) as session:
        done = session.get(Job, STATE["job_id"])
        assert done is not None
        job = Job(task_id=done.task_id, base_model_id=done.base_model_id, dataset_id=done.dataset_id,
                  method="houlsby", method_config={}, hyperparameters={}, state="failed",
                  progress={"step": 3, "total_steps": 18, "history": [], "eval": []},
                  logs=["12:00:00 attempt 1 started", "12:00:01 CUDA out of memory"], attempts=1,
                  error_code="out_of_memory", error_message="CUDA out of memory: try a smaller batch_size",
                  submitted_by="admin", finished_at=datetime.now(UTC))
        session.add(job)
        session.flush()
        job_id = job.id
    visit(page, f"/jobs/{job_id}", shots, "job-failed")
    alert = page.locator("#job-live .alert-error")
    assert "out_of_memory" in alert.inner_text()
    assert "try a smaller batch_size" in alert.inner_text()
    assert page.get_attribute("#job-live", "data-terminal") == "true"
