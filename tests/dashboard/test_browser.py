"""The dashboard in a real browser: Debian's Chromium driven by Playwright (sync API)
against the live server of ``conftest.py``. Screenshots of every page at 1280x800 and
375x800 go to ``test-artifacts/dashboard/``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard import driver
from tests.dashboard.conftest import ROOT, XSS_NAME, Seeded

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which("/usr/bin/chromium") is None, reason="no /usr/bin/chromium"),
]
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
VIEWPORTS = {"desktop": (1280, 800), "phone": (375, 800)}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


class Tab:
    """One browser tab, logged in, collecting console errors, page errors and dialogs."""

    def __init__(self, browser: Any, base: str, token: str, size: tuple[int, int]) -> None:
        self.base = base
        self.context = browser.new_context(viewport={"width": size[0], "height": size[1]})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.alerts: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("dialog", self._on_dialog)
        self.page.goto(base + "/ui/login")
        self.page.fill("#token", token)
        self.page.click("#login-submit")
        self.page.wait_for_url(base + "/ui")
        self.page.wait_for_selector("#experiments-table tbody tr")

    def _on_dialog(self, dialog: Any) -> None:  # a JS alert() would mean injected script ran
        self.alerts.append(dialog.message)
        dialog.dismiss()

    def open(self, path: str) -> Any:
        self.page.goto(self.base + path)
        self.page.wait_for_selector("body[data-ready='1']", timeout=15_000)
        return self.page

    def shot(self, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()


def chart_traces(page: Any, selector: str) -> int:
    return int(page.evaluate(
        "(s) => { const d = document.querySelector(s); return d && d.data ? d.data.length : 0 }",
        selector))


def api(seeded: Seeded, path: str) -> dict[str, Any]:
    r = httpx.get(seeded.base + path, headers={"Authorization": f"Bearer {driver.ADMIN}"})
    r.raise_for_status()
    out: dict[str, Any] = r.json()
    return out


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_every_page_loads_without_errors(browser: Any, seeded: Seeded, viewport: str) -> None:
    size = VIEWPORTS[viewport]
    tab = Tab(browser, seeded.base, driver.ADMIN, size)
    try:
        tab.page.wait_for_selector("#experiments-table a.name")
        tab.shot(f"experiments-{size[0]}x{size[1]}")
        page = tab.open(f"/ui/experiments/{seeded.finished}")
        page.wait_for_selector("#rungs-table tbody tr")
        page.locator("#parcoords-chart").scroll_into_view_if_needed()  # drawn when in view
        page.wait_for_function(
            "() => ['#curves-chart', '#parcoords-chart', '#importance-chart']"
            ".every(s => { const d = document.querySelector(s); return d.data && d.data.length })")
        assert chart_traces(page, "#curves-chart") >= 3  # completed, stopped, best
        assert chart_traces(page, "#parcoords-chart") == 1
        assert page.locator("#rungs-table tbody tr").count() == 4
        assert "WebGL is not supported" not in page.inner_text("main")
        if viewport == "phone":  # the page fits; wide tables scroll inside their wrapper
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= size[0] + 1
        tab.shot(f"experiment-{size[0]}x{size[1]}")
        page = tab.open(f"/ui/experiments/{seeded.running}")
        page.wait_for_function("() => document.querySelector('#curves-chart').data")
        tab.shot(f"experiment-running-{size[0]}x{size[1]}")
        best = api(seeded, f"/api/v1/experiments/{seeded.finished}")["progress"]["best"]
        page = tab.open(f"/ui/trials/{best['trial_id']}")
        assert chart_traces(page, "#trial-curve") == 3  # reports, superseded, rungs
        assert page.locator("#decisions-table tbody tr").count() >= 3
        assert "<b>loss</b>" in page.inner_text("#trial-output")  # output shown as text
        tab.shot(f"trial-{size[0]}x{size[1]}")
        page = tab.open("/ui/workers")
        assert page.locator("#workers-table tbody tr").count() >= 3
        tab.shot(f"workers-{size[0]}x{size[1]}")
        page.goto(seeded.base + "/ui/login")
        page.wait_for_selector("#login-form")
        tab.shot(f"login-{size[0]}x{size[1]}")
        assert tab.errors == [] and tab.alerts == []
    finally:
        tab.close()


def test_names_users_typed_render_as_text(browser: Any, seeded: Seeded) -> None:
    tab = Tab(browser, seeded.base, driver.ADMIN, VIEWPORTS["desktop"])
    try:
        page = tab.page
        link = page.locator("#experiments-table a.name", has_text="onerror")
        assert link.inner_text() == XSS_NAME
        page = tab.open(f"/ui/experiments/{seeded.finished}")
        assert page.inner_text("#exp-name") == XSS_NAME
        assert page.locator("main img").count() == 0
        assert page.locator("main script").count() == 0
        assert "<script>alert(2)</script>" in page.inner_text("#trials-table")
        page.wait_for_timeout(300)
        assert tab.alerts == [] and tab.errors == []
    finally:
        tab.close()


def test_admin_pauses_resumes_and_stops_a_trial(browser: Any, seeded: Seeded) -> None:
    tab = Tab(browser, seeded.base, driver.ADMIN, VIEWPORTS["desktop"])
    exp = f"/api/v1/experiments/{seeded.running}"
    try:
        page = tab.open(f"/ui/experiments/{seeded.running}")
        page.click("#action-pause")
        page.wait_for_selector("#confirm[open]")
        page.click("#confirm-no")  # changing one's mind does nothing
        assert api(seeded, exp)["state"] == "running"
        page.click("#action-pause")
        page.click("#confirm-yes")
        state_is = "(s) => document.querySelector('#exp-state').textContent === s"
        page.wait_for_function(state_is, arg="paused")
        assert api(seeded, exp)["state"] == "paused"
        assert page.locator("#action-pause").is_hidden()
        page.click("#action-resume")
        page.click("#confirm-yes")
        page.wait_for_function(state_is, arg="running")
        assert api(seeded, exp)["state"] == "running"

        victim = next(t for t in api(seeded, exp + "/trials?state=paused&limit=5")["items"])
        page.select_option("#trial-filter", "paused")
        link = page.locator(f"a[href='/ui/trials/{victim['id']}']")
        row = page.locator("#trials-table tbody tr", has=link)
        row.get_by_role("button", name=f"Stop trial #{victim['number']}").click()
        page.click("#confirm-yes")
        page.wait_for_function(
            "(id) => !document.querySelector(`#trials-table a[href='/ui/trials/${id}']`)",
            arg=victim["id"])  # it left the 'paused' filter
        assert api(seeded, f"/api/v1/trials/{victim['id']}")["state"] == "stopped"
        assert tab.errors == []
    finally:
        tab.close()


def test_a_viewer_sees_everything_and_can_act_on_nothing(browser: Any, seeded: Seeded) -> None:
    tab = Tab(browser, seeded.base, seeded.viewer_token, VIEWPORTS["desktop"])
    try:
        for path in [f"/ui/experiments/{seeded.running}", f"/ui/trials/{seeded.held_trial}"]:
            page = tab.open(path)
            page.wait_for_selector("#main h1")
            assert page.locator("button.action:visible:enabled").count() == 0
            assert page.inner_text("#who").startswith("viewer")
        r = httpx.post(f"{seeded.base}/api/v1/trials/{seeded.held_trial}/stop",
                       headers={"Authorization": f"Bearer {seeded.viewer_token}"})
        assert r.status_code == 403
        assert api(seeded, f"/api/v1/trials/{seeded.held_trial}")["state"] == "running"
        assert tab.errors == []
    finally:
        tab.close()


def test_live_updates_patch_the_page_without_reload(browser: Any, seeded: Seeded) -> None:
    tab = Tab(browser, seeded.base, driver.ADMIN, VIEWPORTS["desktop"])
    job = seeded.held_job
    try:
        page = tab.open(f"/ui/trials/{seeded.held_trial}")
        page.evaluate("() => { window.__marker = 1; }")  # gone if the page reloads
        assert page.inner_text("#trial-state") == "running"
        n = page.locator("#decisions-table tbody tr:not(.empty)").count()
        body: dict[str, Any] = {"lease_token": job["lease_token"]}
        if job["to_resource"] != job["from_resource"] + 1:  # a promotion: its end unreported
            body["value"] = 0.5
        with driver.client(seeded.base) as c:  # the held job ends: the trial waits at its rung
            c.post(f"/api/v1/jobs/{job['job_id']}/complete", json=body).raise_for_status()
        page.wait_for_function(
            "() => document.querySelector('#trial-state').textContent !== 'running'",
            timeout=5_000)  # one poll (2 s) later
        assert page.locator("#decisions-table tbody tr:not(.empty)").count() > n
        assert page.evaluate("() => window.__marker") == 1
        assert tab.errors == []
    finally:
        tab.close()


def test_a_paused_experiment_says_why_until_resumed(browser: Any, seeded: Seeded) -> None:
    """The breaker's pause shows its reason on the experiment page (with the last error);
    Resume clears it."""
    doc = {**driver.asha_document("breaker-demo", max_trials=5), "pause_after_failures": 2}
    experiment_id = driver.create_experiment(seeded.base, doc)
    with driver.client(seeded.base) as c:
        for _ in range(2):
            job = c.post(f"/api/v1/experiments/{experiment_id}/claims", json={}).json()
            c.post(f"/api/v1/jobs/{job['job_id']}/fail", json={
                "lease_token": job["lease_token"],
                "error": "Traceback ...\nModuleNotFoundError: No module named 'torch'",
            }).raise_for_status()
    tab = Tab(browser, seeded.base, driver.ADMIN, VIEWPORTS["desktop"])
    try:
        page = tab.open(f"/ui/experiments/{experiment_id}")
        reason = page.locator("#exp-state-reason")
        reason.wait_for(state="visible")
        assert "last 2 jobs failed" in reason.inner_text()
        assert "No module named 'torch'" in reason.inner_text()
        assert page.inner_text("#exp-state") == "paused"
        tab.shot("experiment-paused-by-breaker-1280x800")
        page.click("#action-resume")
        page.click("#confirm-yes")
        reason.wait_for(state="hidden")
        assert api(seeded, f"/api/v1/experiments/{experiment_id}")["state_reason"] is None
        assert tab.errors == []
    finally:
        tab.close()


def test_a_retrys_values_replace_the_first_runs_on_the_trial_page(
    browser: Any, seeded: Seeded
) -> None:
    """Steps a retry reported again show the current value on the line and the first run's
    as grey markers, and the note says how many."""
    experiment_id = driver.create_experiment(
        seeded.base, driver.asha_document("retry-demo", form="stopping", max_trials=1)
    )
    with driver.client(seeded.base) as c:
        job = c.post(f"/api/v1/experiments/{experiment_id}/claims", json={}).json()
        for step, value in [(1, 0.9), (2, 0.8), (3, 0.7)]:
            body = {"lease_token": job["lease_token"], "step": step, "value": value}
            if step == 1:
                body["checkpoint"] = "ckpt-1"
            c.post(f"/api/v1/jobs/{job['job_id']}/reports", json=body).raise_for_status()
        c.post(f"/api/v1/jobs/{job['job_id']}/fail",
               json={"lease_token": job["lease_token"], "error": "oom"}).raise_for_status()
        retry = c.post(f"/api/v1/experiments/{experiment_id}/claims", json={}).json()
        for step, value in [(2, 0.85), (3, 0.75), (4, 0.6)]:
            body = {"lease_token": retry["lease_token"], "step": step, "value": value}
            c.post(f"/api/v1/jobs/{retry['job_id']}/reports", json=body).raise_for_status()
    tab = Tab(browser, seeded.base, driver.ADMIN, VIEWPORTS["desktop"])
    try:
        page = tab.open(f"/ui/trials/{job['trial_id']}")
        page.wait_for_function("() => document.querySelector('#trial-curve').data")
        ys = page.evaluate(
            "() => document.querySelector('#trial-curve').data.map(t => Array.from(t.y))")
        assert ys[0] == [0.9, 0.85, 0.75, 0.6]  # the current values
        assert ys[1] == [0.8, 0.7]  # the first run's, superseded
        assert "2 values a retry reported again" in page.inner_text("main")
        first_job = page.locator("#jobs-table tbody tr").first  # failed: it shows its end
        assert "failed" in first_job.inner_text()
        assert "UTC" in first_job.locator("td").last.inner_text()
        tab.shot("trial-superseded-1280x800")
        assert tab.errors == []
    finally:
        tab.close()
