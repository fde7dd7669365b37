"""Schemathesis against the app's own OpenAPI schema: every operation fuzzed with a bounded number of
examples, as an admin (so requests get past authentication into the handlers); no 5xx allowed.

The app runs in-process over ASGI on a real SQLite database and local store with a base model, a
task and a dataset already registered, so generated requests reach real rows. Runs in CI with the
rest of the integration tests; ``SCHEMATHESIS_MAX_EXAMPLES`` raises the budget for a longer run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from tests.fixtures.stack import make_stack
from tests.integration.test_reliability import api, setup_task

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "10"))


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Iterator[tuple[Any, str]]:
    from registry.api import ratelimit
    from registry.api.app import create_app

    tmp = tmp_path_factory.mktemp("schemathesis")
    st = make_stack(tmp, submit_rate_per_minute=100_000)
    client = api(st)
    setup_task(client, tiny_bert, tmp)
    app = create_app(st.settings)
    yield schemathesis.openapi.from_asgi("/openapi.json", app), st.token
    ratelimit.reset()
    st.stop()


def _content_type(response: Any) -> str:
    ctype = response.headers.get("content-type", [""])
    return str(ctype[0] if isinstance(ctype, list) else ctype)


def test_no_server_errors(fuzz_target: tuple[Any, str]) -> None:
    schema, token = fuzz_target
    failures: list[str] = []
    operations = 0
    calls = 0

    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            nonlocal calls
            calls += 1
            response = case.call(headers={"Authorization": f"Bearer {token}"})
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                f"{response.text[:300]}\n  {case.as_curl_command()}")
            elif (response.status_code >= 400 and case.path.startswith("/api/")
                  and not _content_type(response).startswith("application/problem+json")):
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code} "
                                f"as {_content_type(response)!r}, not problem+json")

        run()
    assert operations > 20 and calls > operations
    assert not failures, f"{len(failures)} bad responses:\n" + "\n".join(failures[:30])
