"""The web dashboard in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright), on a real stack.

The test loads the page, starts a Generate job from its form, watches the job's progress reach 100% with its event
history, previews the dataset's first rows, and takes a screenshot. A second test checks the dashboard's HTTP API
keeps the RPCs' authentication and roles.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from server.devstack import free_port
from tests.e2e.conftest import Stack
from tests.e2e.helpers import wait_for
from tests.e2e.test_auth import AUDIENCE, SECRET, token

CHROMIUM = os.environ.get("DATAMILL_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-extensions",
    "--no-first-run",
]


def _chromium() -> str:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package (make browser)")
    return CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))


def _dashboard_stack(stack_factory: Any, settings: dict[str, str] | None = None) -> tuple[Stack, str]:
    listen = f"127.0.0.1:{free_port()}"
    stack: Stack = stack_factory(settings=settings or {}, server_args=("--dashboard", listen))
    wait_for(lambda: _get(f"http://{listen}/")[0] == 200, timeout=30, what="the dashboard")
    return stack, f"http://{listen}"


def _get(url: str, bearer: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {bearer}"} if bearer else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            return response.status, json.loads(body) if url.rstrip("/").count("/") > 2 else body
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
    except OSError:
        return 0, None


def test_the_page_starts_a_job_and_follows_it_to_100_percent(stack_factory: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright  # noqa: PLC0415

    stack, url = _dashboard_stack(stack_factory)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            expect(page.locator("h1")).to_have_text("datamill")
            page.fill("#new-name", "from_browser")
            page.fill("#new-rows", "300000")
            page.click("button[type=submit]")

            expect(page.locator("#detail-progress-text")).to_have_text("100%", timeout=60_000)
            expect(page.locator("#detail-state")).to_have_text("SUCCEEDED")
            events = page.locator("#events li")
            expect(events.last).to_contain_text("SUCCEEDED")
            assert events.count() >= 3  # CREATED, STARTED, ... SUCCEEDED: the history, not only the end
            expect(page.locator("#jobs tr.job").first).to_contain_text("SUCCEEDED", timeout=10_000)

            page.locator("#datasets tr.dataset", has_text="from_browser").click()
            expect(page.locator("#preview-table tr")).to_have_count(21)  # a header and the first 20 rows
            expect(page.locator("#preview h2")).to_have_text("from_browser: first 20 rows")
            expect(page.locator("#throughput-note")).to_be_visible()
            screenshot = tmp_path / "dashboard.png"
            page.screenshot(path=str(screenshot), full_page=True)
            assert screenshot.stat().st_size > 10_000 and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert not errors, errors
        finally:
            browser.close()
    (count,) = stack.sql("SELECT count(*) FROM jobs WHERE dataset_name = 'from_browser'")[0]
    assert count == 1


def test_the_dashboard_api_has_the_rpcs_auth(stack_factory: Any) -> None:
    _, url = _dashboard_stack(
        stack_factory,
        {"DATAMILL_AUTH": "required", "DATAMILL_JWT_SECRET": SECRET, "DATAMILL_JWT_AUDIENCE": AUDIENCE},
    )
    assert _get(f"{url}/")[0] == 200  # the page itself holds nothing
    status, body = _get(f"{url}/api/jobs")
    assert (status, body["code"]) == (401, "UNAUTHENTICATED")
    assert _get(f"{url}/api/jobs", token(tenant="acme", role="viewer"))[0] == 200
    status, body = _get(f"{url}/api/datasets/nope/preview", token(tenant="acme", role="viewer"))
    assert (status, body["code"]) == (404, "NOT_FOUND")

    generate = urllib.request.Request(
        f"{url}/api/jobs",
        data=json.dumps(
            {"dataset_name": "x", "schema": {"rows": 10, "fields": [{"name": "a", "type": "uuid4"}]}}
        ).encode(),
        headers={"Authorization": f"Bearer {token(tenant='acme', role='viewer')}", "Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(generate, timeout=10)
    assert denied.value.code == 403 and json.loads(denied.value.read())["code"] == "PERMISSION_DENIED"
