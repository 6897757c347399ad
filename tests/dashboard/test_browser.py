"""The dashboard in a real browser: Debian's Chromium driven by Playwright (sync API)
against the live server of ``conftest.py``. Screenshots of every page at 1280x800 and
390x844 go to ``test-artifacts/dashboard/`` (``TUNER_TEST_SHOTS`` names another folder)."""

from __future__ import annotations

import csv
import io
import os
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
ARTIFACTS = Path(os.environ.get("TUNER_TEST_SHOTS", ROOT / "test-artifacts" / "dashboard"))
VIEWPORTS = {"desktop": (1280, 800), "phone": (390, 844)}


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
        # parcoords: a log axis names its values; no two axis titles overlap
        ticks = page.evaluate("() => Array.from(document.querySelectorAll("
                              "'#parcoords-chart .tick text')).map(t => t.textContent)")
        assert "0.001" in ticks and "-3" not in ticks, ticks
        titles = page.evaluate("() => Array.from(document.querySelectorAll("
                               "'#parcoords-chart .axis-title')).map(t => {"
                               " const r = t.getBoundingClientRect();"
                               " return [r.left, r.right, r.top, r.bottom]; })")
        assert len(titles) == 5
        for a, b in zip(titles, titles[1:], strict=False):
            assert a[1] <= b[0] + 1 or a[3] <= b[2] + 1 or b[3] <= a[2] + 1, (a, b)
        page.locator("#parcoords-chart").screenshot(
            path=str(ARTIFACTS / f"parcoords-{size[0]}x{size[1]}.png"))
        tab.shot(f"experiment-{size[0]}x{size[1]}")
        page = tab.open(f"/ui/experiments/{seeded.running}")
        page.wait_for_function("() => document.querySelector('#curves-chart').data")
        tab.shot(f"experiment-running-{size[0]}x{size[1]}")
        best = api(seeded, f"/api/v1/experiments/{seeded.finished}")["progress"]["best"]
        page = tab.open(f"/ui/experiments/{seeded.finished}/trials/{best['trial_number']}")
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
        name = f"{seeded.running}/{victim['number']}"
        page.select_option("#trial-filter", "paused")
        row = page.locator(f"#trials-table tbody tr[data-number='{victim['number']}']")
        stop = row.get_by_role("button", name=f"Stop training trial {name}")
        assert stop.inner_text() == "Stop training"
        assert stop.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(255, 255, 255)"
        stop.click()
        assert page.inner_text("#confirm-title") == f"Stop training trial {name}?"
        page.click("#confirm-yes")
        page.wait_for_function(
            "(n) => !document.querySelector(`#trials-table tr[data-number='${n}']`)",
            arg=victim["number"])  # it left the 'waiting' filter
        assert api(seeded, f"/api/v1/trials/{victim['id']}")["state"] == "stopped"
        assert tab.errors == []
    finally:
        tab.close()


def test_a_viewer_sees_everything_and_can_act_on_nothing(browser: Any, seeded: Seeded) -> None:
    tab = Tab(browser, seeded.base, seeded.viewer_token, VIEWPORTS["desktop"])
    try:
        held = f"/ui/experiments/{seeded.running}/trials/{seeded.held_job['trial_number']}"
        for path in [f"/ui/experiments/{seeded.running}", held]:
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
        page = tab.open(f"/ui/experiments/{seeded.running}/trials/{job['trial_number']}")
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
        page = tab.open(f"/ui/experiments/{experiment_id}/trials/{job['trial_number']}")
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


# ---- the experiment page for a practitioner (issue 16) ------------------------------------------
def export_of(seeded: Seeded, experiment_id: int) -> dict[str, Any]:
    return api(seeded, f"/api/v1/experiments/{experiment_id}/export?format=json")


def test_the_best_trial_comes_first_with_its_step_and_checkpoint(
    browser: Any, seeded: Seeded
) -> None:
    tab = Tab(browser, seeded.base, driver.ADMIN, VIEWPORTS["desktop"])
    try:
        page = tab.open(f"/ui/experiments/{seeded.finished}")
        best = api(seeded, f"/api/v1/experiments/{seeded.finished}")["progress"]["best"]
        top = api(seeded, f"/api/v1/experiments/{seeded.finished}/trials?order_by=value&limit=1")
        t = top["items"][0]
        assert t["number"] == best["trial_number"]
        name = f"{seeded.finished}/{t['number']}"
        assert page.inner_text("#best-link") == f"trial {name}"
        assert page.get_attribute("#best-link", "href") == (
            f"/ui/experiments/{seeded.finished}/trials/{t['number']}")
        shown = float(page.inner_text("#best-value"))
        assert abs(shown - t["ranked_value"]) <= 1e-4 * abs(t["ranked_value"])
        assert page.inner_text("#best-step") == f"step {t['ranked_step']} (rung {t['rung']})"
        assert page.inner_text("#best-checkpoint").startswith(t["checkpoint"])
        # the best card is above everything else on the page
        top_of = "(s) => document.querySelector(s).getBoundingClientRect().top"
        assert page.evaluate(top_of, "#best") < page.evaluate(top_of, "#best-so-far")
        assert page.evaluate(top_of, "#best-so-far") < page.evaluate(top_of, "#curves")
        assert page.evaluate(top_of, "#curves") < page.evaluate(top_of, "#trials")
        page.wait_for_function("() => document.querySelector('#best-so-far-chart').data")
        values = page.evaluate(
            "() => Array.from(document.querySelector('#best-so-far-chart').data[0].y)")
        assert values == sorted(values, reverse=True)  # val_loss: lower is better
        page.select_option("#best-by", "resource")
        page.wait_for_function("() => document.querySelector('#best-so-far-chart')"
                               ".layout.xaxis.type === 'linear'")
        # the learning curves' value axis is fitted to the results, not from 0
        y_range = page.evaluate("() => document.querySelector('#curves-chart').layout.yaxis.range")
        assert y_range[0] > 0
        tab.shot("experiment-best-1280x800")
        assert tab.errors == []
    finally:
        tab.close()


def test_sort_by_a_parameter_and_filter_by_state_and_column(browser: Any, seeded: Seeded) -> None:
    tab = Tab(browser, seeded.base, driver.ADMIN, VIEWPORTS["desktop"])
    rows = "#trials-table tbody tr"
    numbers = f"() => Array.from(document.querySelectorAll('{rows}')).map(r => +r.dataset.number)"
    try:
        page = tab.open(f"/ui/experiments/{seeded.finished}")
        table = export_of(seeded, seeded.finished)
        assert page.evaluate(numbers) == [t["number"] for t in table["trials"]]  # ranking order
        page.click("#trials-table button.sort[data-key='param.lr']")
        by_lr = sorted(table["trials"], key=lambda t: t["params"]["lr"])
        assert page.evaluate(numbers) == [t["number"] for t in by_lr]
        page.click("#trials-table button.sort[data-key='param.lr']")  # again: descending
        assert page.evaluate(numbers) == [t["number"] for t in reversed(by_lr)]
        assert page.get_attribute("th:has(button[data-key='param.lr'])", "aria-sort") == (
            "descending")

        page.select_option("#trial-filter", "stopped")
        stopped = [t["number"] for t in table["trials"] if t["state"] == "stopped"]
        assert stopped and sorted(page.evaluate(numbers)) == sorted(stopped)
        badges = page.locator(f"{rows} .badge")
        for i in range(badges.count()):
            assert badges.nth(i).inner_text().startswith("stopped at rung")
            assert "trial-stopped" in (badges.nth(i).get_attribute("class") or "")
        page.select_option("#trial-filter", "")
        page.fill("#trials-table input.col-filter[data-key='param.layers']", ">=4")
        deep = [t["number"] for t in table["trials"] if t["params"]["layers"] >= 4]
        assert sorted(page.evaluate(numbers)) == sorted(deep)
        page.click("#trials-clear")
        page.select_option("#rung-filter", "2")
        far = [t["number"] for t in table["trials"] if t["rung"] >= 2]
        assert far and sorted(page.evaluate(numbers)) == sorted(far)
        assert tab.errors == []
    finally:
        tab.close()


def test_compare_two_trials_side_by_side(browser: Any, seeded: Seeded) -> None:
    tab = Tab(browser, seeded.base, driver.ADMIN, VIEWPORTS["desktop"])
    try:
        page = tab.open(f"/ui/experiments/{seeded.finished}")
        table = export_of(seeded, seeded.finished)
        a, b = table["trials"][0], table["trials"][1]
        assert page.is_disabled("#compare-btn")
        for t in (a, b):
            page.check(f"#trials-table tr[data-number='{t['number']}'] input.pick")
        assert page.inner_text("#compare-btn") == "Compare selected (2)"
        page.click("#compare-btn")
        page.wait_for_function("() => document.body.dataset.compared")
        traces = page.evaluate("() => document.querySelector('#compare-chart').data"
                               ".map(t => [t.name, t.x.length])")
        assert [name for name, _ in traces] == [
            f"{seeded.finished}/{a['number']}", f"{seeded.finished}/{b['number']}"]
        assert all(n >= 1 for _, n in traces)
        heads = page.locator("#compare-table thead th").all_inner_texts()
        assert [h.strip() for h in heads[1:]] == [
            f"{seeded.finished}/{a['number']}", f"{seeded.finished}/{b['number']}"]
        lr_row = page.locator("#compare-table tbody tr", has_text="lr").first
        cells = lr_row.locator("td").all_inner_texts()
        assert [float(c) for c in cells] == pytest.approx(
            [a["params"]["lr"], b["params"]["lr"]], rel=1e-4)
        tab.shot("experiment-compare-1280x800")
        assert tab.errors == []
    finally:
        tab.close()


def test_the_csv_download_has_the_apis_rows(browser: Any, seeded: Seeded) -> None:
    tab = Tab(browser, seeded.base, seeded.viewer_token, VIEWPORTS["desktop"])
    try:
        page = tab.open(f"/ui/experiments/{seeded.finished}")
        with page.expect_download() as info:
            page.click("#download-csv")
        download = info.value
        assert download.suggested_filename == f"experiment-{seeded.finished}-trials.csv"
        rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
        ranked = api(seeded, f"/api/v1/experiments/{seeded.finished}/trials?order_by=value"
                             "&limit=100")["items"]
        assert [int(r["number"]) for r in rows] == [t["number"] for t in ranked]
        for row, trial in zip(rows, ranked, strict=True):
            assert row["state"] == trial["state"]
            assert float(row["ranked_value"]) == trial["ranked_value"]
            assert float(row["param.lr"]) == trial["params"]["lr"]
            assert int(row["param.layers"]) == trial["params"]["layers"]
            assert row["param.optimizer"] == trial["params"]["optimizer"]
        assert tab.errors == []
    finally:
        tab.close()


def test_a_waiting_trial_is_neutral_and_says_where_it_waits(browser: Any, seeded: Seeded) -> None:
    tab = Tab(browser, seeded.base, driver.ADMIN, VIEWPORTS["desktop"])
    try:
        page = tab.open(f"/ui/experiments/{seeded.running}")
        waiting = api(seeded, f"/api/v1/experiments/{seeded.running}/trials?state=paused"
                              "&limit=1")["items"][0]
        badge = page.locator(f"#trials-table tr[data-number='{waiting['number']}'] .badge")
        assert badge.inner_text() == f"waiting at rung {waiting['rung']}"
        assert "trial-waiting" in (badge.get_attribute("class") or "")
        color = badge.evaluate("b => getComputedStyle(b).backgroundColor")
        red, green, blue = (int(x) for x in color[color.index("(") + 1:-1].split(",")[:3])
        assert not (red > 150 and green < 100 and blue < 100), color  # not red
        assert "paused" not in page.inner_text("#trials-table tbody")
        page = tab.open(f"/ui/experiments/{seeded.running}/trials/{waiting['number']}")
        assert page.inner_text("#trial-state") == f"waiting at rung {waiting['rung']}"
        assert tab.errors == []
    finally:
        tab.close()


def test_the_trial_page_is_named_experiment_and_number(browser: Any, seeded: Seeded) -> None:
    tab = Tab(browser, seeded.base, driver.ADMIN, VIEWPORTS["desktop"])
    try:
        trial = api(seeded, f"/api/v1/experiments/{seeded.finished}/trials/2")
        page = tab.open(f"/ui/trials/{trial['id']}")  # the old address: redirected
        assert page.url == f"{seeded.base}/ui/experiments/{seeded.finished}/trials/2"
        assert page.title() == f"experiment {seeded.finished} › trial 2 · tuner"
        assert page.inner_text("#crumbs") == f"Experiments › experiment {seeded.finished} › trial 2"
        assert page.inner_text("#trial-title") == f"Trial {seeded.finished}/2"
        ended = page.locator("#jobs-table tbody tr td:last-child").all_inner_texts()
        assert ended and all(text.endswith("UTC") for text in ended)  # every job ended
        page.click("#trial-experiment")
        page.wait_for_url(f"{seeded.base}/ui/experiments/{seeded.finished}")
        assert tab.errors == []
    finally:
        tab.close()


def test_a_failed_trial_lists_its_attempts_and_draws_no_empty_chart(
    browser: Any, seeded: Seeded
) -> None:
    doc = {**driver.asha_document("fails-demo", max_trials=1), "pause_after_failures": 10}
    experiment_id = driver.create_experiment(seeded.base, doc)
    failed = 0
    with driver.client(seeded.base) as c:
        while True:
            r = c.post(f"/api/v1/experiments/{experiment_id}/claims",
                       json={"worker_id": "worker-1", "wait_s": 0})
            if r.status_code != 200:
                break
            job = r.json()
            c.post(f"/api/v1/jobs/{job['job_id']}/fail", json={
                "lease_token": job["lease_token"],
                "error": "Traceback (most recent call last):\n  File \"train.py\", line 3\n"
                         f"RuntimeError: CUDA out of memory (attempt {failed + 1})",
            }).raise_for_status()
            failed += 1
    trial = api(seeded, f"/api/v1/experiments/{experiment_id}/trials/0")
    assert trial["state"] == "failed" and failed >= 2
    tab = Tab(browser, seeded.base, driver.ADMIN, VIEWPORTS["desktop"])
    try:
        page = tab.open(f"/ui/experiments/{experiment_id}/trials/0")
        items = page.locator("#attempts li")
        assert items.count() == failed
        for i in range(failed):
            text = items.nth(i).inner_text()
            assert f"Attempt {i + 1}" in text and "worker worker-1" in text and "failed" in text
            assert f"CUDA out of memory (attempt {i + 1})" in text and "UTC" in text
        assert page.locator("#trial-curve").is_hidden()
        assert "failed before its first report" in page.inner_text("#trial-curve-note")
        assert page.locator("#trial-state").inner_text() == "failed"
        tab.shot("trial-failed-1280x800")
        assert tab.errors == []
    finally:
        tab.close()


def test_an_experiment_without_results_draws_no_empty_charts(
    browser: Any, seeded: Seeded
) -> None:
    experiment_id = driver.create_experiment(seeded.base, driver.asha_document("no-results-yet"))
    tab = Tab(browser, seeded.base, driver.ADMIN, VIEWPORTS["desktop"])
    try:
        page = tab.open(f"/ui/experiments/{experiment_id}")
        assert page.locator("#curves-chart").is_hidden()  # no empty axes
        assert page.inner_text("#curves-note") == "No reports yet."
        assert page.locator("#curves-chart .main-svg").count() == 0
        assert page.inner_text("#parcoords-note") == "No trial has a finite result at a rung yet."
        box = page.locator("#parcoords").bounding_box()  # the card shrinks to its sentence
        assert box is not None and box["height"] < 120, box
        assert page.is_hidden("#banner")  # every part of the page refreshed
        tab.shot("experiment-no-results-1280x800")
        assert tab.errors == []
    finally:
        tab.close()


def test_the_trial_page_names_its_metric_and_what_it_trained(
    browser: Any, seeded: Seeded
) -> None:
    experiment_id = driver.create_experiment(seeded.base, driver.asha_document("stopped-by-hand"))
    job = driver.hold_one_job(seeded.base, experiment_id)  # one report, at step 1
    number = job["trial_number"]
    tab = Tab(browser, seeded.base, driver.ADMIN, VIEWPORTS["desktop"])
    try:
        page = tab.open(f"/ui/experiments/{experiment_id}")
        page.wait_for_function("() => document.querySelector('#curves-chart').layout")
        exp_x = page.evaluate("() => document.querySelector('#curves-chart').layout.xaxis.type")
        page = tab.open(f"/ui/experiments/{experiment_id}/trials/{number}")
        assert page.inner_text("#trial-curve-note").startswith("1 report;")
        layout = "() => document.querySelector('#trial-curve').layout"
        assert page.evaluate(layout + ".yaxis.title.text") == "val_loss"
        assert page.evaluate(layout + ".xaxis.type") == exp_x == "log"  # as the experiment's
        assert page.evaluate(layout + ".xaxis.tickvals") == [1, 3, 9, 27]  # its rungs
        assert page.inner_text("#decisions-cutoff") == "Cutoff (val_loss)"
        assert "lower is better" in page.inner_text("#decisions-note")
        with driver.client(seeded.base) as c:
            c.post(f"/api/v1/experiments/{experiment_id}/trials/{number}/stop").raise_for_status()
            r = c.post(f"/api/v1/jobs/{job['job_id']}/complete",
                       json={"lease_token": job["lease_token"]})
            assert r.status_code == 200, r.text
            assert r.json()["reason"]["rule"] == "manual_stop"  # stopped at its job's end
        trial = api(seeded, f"/api/v1/experiments/{experiment_id}/trials/{number}")
        assert trial["state"] == "stopped" and trial["resource"] == 0
        page = tab.open(f"/ui/experiments/{experiment_id}/trials/{number}")
        page.wait_for_function("() => document.querySelector('#trial-state').textContent"
                               " !== 'running'")
        assert page.inner_text("#trial-curve-note").startswith("1 report;")
        # `resource` counts completed jobs: the step it reported past it is said
        assert page.inner_text("#fact-resource") == "0 (last report at step 1)"
        assert "Resource completed" in page.inner_text("#trial-facts")
        tab.shot("trial-stopped-by-hand-1280x800")
        assert tab.errors == []
    finally:
        tab.close()


def test_the_top_rung_has_no_one_waiting_and_no_value_to_beat(
    browser: Any, seeded: Seeded
) -> None:
    top = driver.asha_document("x")["scheduler"]["max_resource"]
    rungs = api(seeded, f"/api/v1/experiments/{seeded.finished}/rungs")["items"]
    at_top = [r for r in rungs if r["resource"] == top]
    assert at_top and at_top[0]["n_results"] > 0  # the run finished trials at the top
    tab = Tab(browser, seeded.base, driver.ADMIN, VIEWPORTS["desktop"])
    try:
        page = tab.open(f"/ui/experiments/{seeded.finished}")
        rows = page.locator("#rungs-table tbody tr")
        assert rows.count() == len(rungs)
        for i, r in enumerate(rungs):
            cells = [rows.nth(i).locator("td").nth(k).inner_text() for k in range(9)]
            if r["resource"] == top:
                assert cells[1] == f"{r['rung']} (top)"
                assert cells[6] == cells[7] == cells[8] == "—", cells
            else:
                waiting = r["n_results"] - r["n_promoted"] - r["n_stopped"]
                assert cells[6] == str(waiting) and cells[7] == str(r["top_k"]), cells
        assert tab.errors == []
    finally:
        tab.close()


AXIS_LABELS_CLEAR = """div => {
  const box = div.getBoundingClientRect();
  const ticks = Array.from(div.querySelectorAll('.xtick text'))
    .map(t => t.getBoundingClientRect()).filter(r => r.width > 0);
  const title = div.querySelector('.g-xtitle text').getBoundingClientRect();
  const inside = ticks.every(r => r.left >= box.left - 1 && r.right <= box.right + 1
    && r.bottom <= box.bottom + 1);
  const aboveTitle = ticks.every(r => r.bottom <= title.top + 1);
  const apart = ticks.every((r, i) => i === 0 || ticks[i - 1].right <= r.left + 1);
  return {n: ticks.length, inside, aboveTitle, apart};
}"""


def test_at_phone_width_the_best_so_far_times_are_readable(browser: Any, seeded: Seeded) -> None:
    tab = Tab(browser, seeded.base, driver.ADMIN, VIEWPORTS["phone"])
    try:
        page = tab.open(f"/ui/experiments/{seeded.finished}")
        page.wait_for_function("() => document.querySelector('#best-so-far-chart').layout")
        chart = page.locator("#best-so-far-chart")
        chart.scroll_into_view_if_needed()
        got = chart.evaluate(AXIS_LABELS_CLEAR)
        # the ticks neither overlap each other nor the axis title, and none is clipped
        assert got == {"n": got["n"], "inside": True, "aboveTitle": True, "apart": True}, got
        assert got["n"] >= 2
        ticks = chart.evaluate("d => Array.from(d.querySelectorAll('.xtick text'))"
                               ".map(t => t.textContent)")
        assert len(set(ticks)) == len(ticks), ticks  # no tick repeats another
        assert page.evaluate("() => document.querySelector('#best-so-far-chart')"
                             ".layout.xaxis.tickangle") == 0
        title = chart.locator(".g-xtitle text").text_content() or ""
        assert title.startswith("time (UTC)")
        chart.screenshot(path=str(ARTIFACTS / "best-so-far-chart-390x844.png"))
        assert tab.errors == []
    finally:
        tab.close()


def test_at_phone_width_the_key_columns_fit(browser: Any, seeded: Seeded) -> None:
    width, height = VIEWPORTS["phone"]
    tab = Tab(browser, seeded.base, driver.ADMIN, (width, height))
    try:
        for path in [f"/ui/experiments/{seeded.running}",
                     f"/ui/experiments/{seeded.running}/trials/1", "/ui/workers"]:
            page = tab.open(path)
            assert page.evaluate("() => document.documentElement.scrollWidth") <= width, path
        tab.page.goto(seeded.base + "/ui")
        tab.page.wait_for_selector("#experiments-table tbody tr")
        assert tab.page.evaluate("() => document.documentElement.scrollWidth") <= width
        page = tab.open(f"/ui/experiments/{seeded.running}")
        box = page.locator("#best-value").bounding_box()
        assert box is not None and box["x"] + box["width"] <= width
        page.locator("#trials-table").scroll_into_view_if_needed()
        first = page.locator("#trials-table tbody tr").first
        for key in ("trial", "value"):  # the trial and its value show without scrolling
            cell = first.locator(f"td.col-{key}").bounding_box()
            assert cell is not None and cell["x"] + cell["width"] <= width, key
        tab.shot(f"experiment-running-{width}x{height}")
        assert tab.errors == []
    finally:
        tab.close()


def test_an_unknown_experiment_or_trial_is_one_sentence_and_a_way_back(
    browser: Any, seeded: Seeded
) -> None:
    tab = Tab(browser, seeded.base, driver.ADMIN, VIEWPORTS["desktop"])
    try:
        cases = [("/ui/experiments/99", "Experiment 99 does not exist.", "/ui"),
                 (f"/ui/experiments/{seeded.finished}/trials/999",
                  f"Trial {seeded.finished}/999 does not exist.",
                  f"/ui/experiments/{seeded.finished}"),
                 ("/ui/experiments/99/trials/1", "Experiment 99 does not exist.", "/ui")]
        for path, sentence, back in cases:
            page = tab.open(path)
            assert page.get_attribute("body", "data-missing") == "1", path
            assert page.inner_text("#missing h1") == sentence
            assert page.get_attribute("#missing-back", "href") == back
            # nothing else: no empty cards, charts or tables under it
            assert page.locator("main section").count() == 1, path
            assert page.locator("main table, main .chart, main .cards").count() == 0, path
            assert page.is_hidden("#banner"), path
        tab.shot("missing-experiment-1280x800")
        page.click("#missing-back")
        page.wait_for_url(seeded.base + "/ui")
        # the browser logs each 404 it was answered; nothing else went wrong
        assert all("404" in e for e in tab.errors), tab.errors
        assert tab.alerts == []
    finally:
        tab.close()


def _right_edges(page: Any, selector: str) -> list[float]:
    """The right edge (px) of every visible element matching ``selector``."""
    return page.evaluate(
        "s => Array.from(document.querySelectorAll(s)).filter(e => e.offsetParent)"
        ".map(e => e.getBoundingClientRect().right)", selector)


def test_at_phone_width_lists_show_their_key_columns_whole(browser: Any, seeded: Seeded) -> None:
    width, height = VIEWPORTS["phone"]
    tab = Tab(browser, seeded.base, driver.ADMIN, (width, height))
    try:
        page = tab.page
        page.wait_for_selector("#experiments-table td.col-best")
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width
        for col in ("name", "state", "best"):  # whole, inside the screen, not scrolled to
            edges = _right_edges(page, f"#experiments-table td.col-{col}")
            assert edges and max(edges) <= width, col
        for col in ("progress", "states", "created"):  # the minor columns hide
            assert _right_edges(page, f"#experiments-table .col-{col}") == [], col
        # A name breaks between words or at a hyphen, not letter by letter: its link is
        # at most two lines high.
        heights = page.evaluate("() => Array.from(document.querySelectorAll("
                                "'#experiments-table a.name')).map(a => a.getClientRects().length)")
        assert heights and max(heights) <= 2, heights
        tab.shot(f"experiments-keys-{width}x{height}")
        page = tab.open("/ui/workers")
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width
        for col in ("worker", "state", "current", "done"):
            edges = _right_edges(page, f"#workers-table td.col-{col}")
            assert edges and max(edges) <= width, col
        for col in ("host", "gpus", "heartbeat", "lost", "labels"):
            assert _right_edges(page, f"#workers-table .col-{col}") == [], col
        tab.shot(f"workers-keys-{width}x{height}")
        assert tab.errors == []
    finally:
        tab.close()


def test_workers_show_their_state_and_gpus(browser: Any, seeded: Seeded) -> None:
    with driver.client(seeded.base) as c:
        c.post("/api/v1/workers", json={
            "worker_id": "gpu-reader", "host": "h100-box", "gpus": ["NVIDIA H100"],
            "jobs_done": 5, "gpu_stats": [{
                "index": 0, "name": "NVIDIA H100", "utilization": 87,
                "memory_used_mb": 31000, "memory_total_mb": 81559}],
        }).raise_for_status()
        c.post("/api/v1/workers", json={"worker_id": "gone", "host": "old-box",
                                        "exiting": True}).raise_for_status()
    tab = Tab(browser, seeded.base, driver.ADMIN, VIEWPORTS["desktop"])
    try:
        page = tab.open("/ui/workers")
        reader = page.locator("#workers-table tr[id='worker-gpu-reader']")
        gpu = " ".join(reader.locator("td").nth(3).inner_text().split())
        assert gpu == "0 NVIDIA H100: 87 % · 30.3 GiB / 79.6 GiB"
        assert reader.locator("meter").get_attribute("value") == "87"
        assert reader.locator("td").nth(5).inner_text() == "5"
        gone = page.locator("#workers-table tr[id='worker-gone']")
        assert gone.get_attribute("class") == "offline"
        assert gone.locator(".badge").inner_text() == "offline"
        grey = gone.locator("td").first.evaluate("td => getComputedStyle(td).color")
        assert grey == "rgb(156, 163, 175)"  # greyed
        workers = api(seeded, "/ui/api/workers")["items"]
        for w in workers:
            row = page.locator(f"#workers-table tr[id='worker-{w['worker_id']}']")
            state = row.locator(".badge")
            assert state.inner_text() == w["state"]
            assert f"worker-{w['state']}" in (state.get_attribute("class") or "")
            gpus = row.locator("td").nth(3).inner_text()
            if w["gpu_stats"] is None:  # GPUs it cannot read are unknown, none are none
                assert ("unknown" in gpus) if w["gpus"] else gpus == "none"
        assert "busy" in page.inner_text("#workers-status")
        tab.shot("workers-1280x800")
        assert tab.errors == []
    finally:
        tab.close()


def test_a_table_read_in_slices_has_every_trial_once_in_order(
    browser: Any, seeded: Seeded
) -> None:
    tab = Tab(browser, seeded.base, driver.ADMIN, VIEWPORTS["desktop"])
    try:
        page = tab.open(f"/ui/experiments/{seeded.finished}?table_slice=4")  # 15 trials: 4 reads
        numbers = page.evaluate("() => Array.from(document.querySelectorAll("
                                "'#trials-table tbody tr')).map(r => +r.dataset.number)")
        table = export_of(seeded, seeded.finished)
        assert numbers == [t["number"] for t in table["trials"]]
        assert page.inner_text("#trials-count") == "15 of 15 trials"
        assert tab.errors == []
    finally:
        tab.close()
