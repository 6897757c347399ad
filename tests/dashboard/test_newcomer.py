"""A newcomer's first hour, walked end to end as the README tells it (issue 16's "done when").

A real ``tuner server`` in one folder; everything else from another folder, as a user at
their desk: a worker token made through the API with ``tuner token create`` (no database
appears there), ``tuner submit``, a real ``tuner worker`` running ``examples/curves.py`` that
prints one line per job; then, in Chromium, the best trial at the top of the page, a sort by
a parameter, two trials compared, the CSV download checked against the API, and a trial
stopped with ``tuner stop-trial EXP/NUM`` by the number the table shows. Another experiment
created first makes trial ids and numbers differ, so a stop that took the number for an id
would hit the wrong trial. Screenshots at 1280x800 and 390x844 go to
``test-artifacts/newcomer/``.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.dashboard.conftest import ROOT
from tests.server_process import start_ceiling_s
from tests.worker.live import ADMIN_TOKEN, PYTHON, Server, tuner_command

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("/usr/bin/chromium") is None, reason="no /usr/bin/chromium"),
]
sync_api = pytest.importorskip("playwright.sync_api")

from tests.dashboard.test_browser import CHROMIUM_ARGS, Tab  # noqa: E402  (needs playwright)

ARTIFACTS = ROOT / "test-artifacts" / "newcomer"
#: Trials of the newcomer's experiment: enough to fill rung 0 and promote from it.
MAX_TRIALS = 30


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """``tuner server`` in its own folder (its database there), stopped on every path."""
    folder = tmp_path / "server"
    folder.mkdir()
    process = Server(folder / "tuner.db", folder / "server.log")
    try:
        yield process.start()
    finally:
        process.stop()


def tuner(desk: Path, env: dict[str, str], *args: str) -> str:
    """``tuner ARGS`` run from ``desk``; its output (a failure shows it whole)."""
    done = subprocess.run(
        tuner_command(*args), cwd=desk, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"tuner {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout + done.stderr


def api(server: Server, path: str) -> Any:
    r = httpx.get(server.url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    r.raise_for_status()
    return r.json()


def wait_for(what: str, check: Any, ceiling_s: float) -> Any:
    """Poll ``check`` until it answers something truthy; fail naming ``what`` at the ceiling
    (generous: it scales with the machine's load)."""
    deadline = time.monotonic() + ceiling_s
    while True:
        answer = check()
        if answer:
            return answer
        assert time.monotonic() < deadline, f"waited {ceiling_s:.0f} s for {what}"
        time.sleep(0.5)


def test_a_newcomers_first_hour(browser: Any, server: Server, tmp_path: Path) -> None:
    desk = tmp_path / "desk"
    desk.mkdir()
    admin = {**os.environ, "TUNER_URL": server.url, "TUNER_TOKEN": ADMIN_TOKEN, "COLUMNS": "200"}

    # A token for the GPU box, through the server: no database appears on the desk.
    made = tuner(desk, admin, "token", "create", "--role", "worker", "--name", "gpu-box-1")
    worker_token = re.search(r"tnr_[A-Za-z0-9_\-]+", made)
    assert worker_token, made
    assert list(desk.iterdir()) == []
    names = [t["name"] for t in api(server, "/api/v1/tokens")["items"]]
    assert "gpu-box-1" in names

    # A first experiment with trials of its own: ids and numbers now differ.
    document = yaml.safe_load((ROOT / "examples" / "asha.yaml").read_text())
    decoy = desk / "decoy.yaml"
    decoy.write_text(yaml.safe_dump({**document, "name": "decoy"}))
    first = int(re.search(r"created experiment (\d+)", tuner(desk, admin, "submit", str(decoy)))
                .group(1))  # type: ignore[union-attr]
    worker_headers = {"Authorization": f"Bearer {worker_token.group(0)}"}
    for _ in range(3):
        r = httpx.post(f"{server.url}/api/v1/experiments/{first}/claims", json={},
                       headers=worker_headers)
        assert r.status_code == 200, r.text
    mine = desk / "asha.yaml"
    mine.write_text(yaml.safe_dump({**document, "budget": {"max_trials": MAX_TRIALS}}))
    created = tuner(desk, admin, "submit", str(mine))
    exp = int(re.search(r"created experiment (\d+)", created).group(1))  # type: ignore[union-attr]
    assert exp == first + 1

    # The worker, as the README runs it; stopped once rung 0 has promoted some trials.
    log = desk / "worker.log"
    env = {**os.environ, "TUNER_URL": server.url, "TUNER_TOKEN": worker_token.group(0),
           "COLUMNS": "200"}
    with log.open("wb") as out:
        worker = subprocess.Popen(
            tuner_command("worker", "--experiment", str(exp), "--slots", "2", "--",
                          PYTHON, str(ROOT / "examples" / "curves.py")),
            cwd=desk, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
        try:
            def ready() -> bool:
                trials = api(server, f"/api/v1/experiments/{exp}/trials?limit=100")["items"]
                waiting = [t for t in trials if t["state"] == "paused"]
                promoted = [t for t in trials if (t["ranked_step"] or 0) >= 3]
                return len(waiting) >= 2 and len(promoted) >= 2

            wait_for("two trials waiting at rung 0 and two promoted", ready,
                     20 * start_ceiling_s())
        finally:
            worker.send_signal(signal.SIGTERM)  # it releases its jobs and says why it exits
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
    lines = log.read_text()
    assert worker.returncode == 0, lines
    started = re.findall(rf"slot \d: {exp}/(\d+) started, resource (\d+)→(\d+)", lines)
    ended = re.findall(rf"slot \d: {exp}/(\d+) (completed|waiting at rung|stopped|released|"
                       r"ended as the worker left|failed)", lines)
    jobs = [
        job for t in api(server, f"/api/v1/experiments/{exp}/trials?limit=100")["items"]
        for job in api(server, f"/api/v1/experiments/{exp}/trials/{t['number']}")["jobs"]
        if job["state"] != "queued"
    ]
    # One line each way per job; a job claimed at the SIGTERM is released unstarted, silently.
    assert len(started) == len(ended), lines
    assert len([j for j in jobs if j["state"] != "released"]) <= len(started) <= len(jobs), lines
    assert "worker exits" in lines and "Traceback" not in lines

    tab = Tab(browser, server.url, ADMIN_TOKEN, (1280, 800))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        page = tab.page
        page.click(f"#experiments-table a[href='/ui/experiments/{exp}']")
        page.wait_for_selector("body[data-ready='1']")
        page.wait_for_selector("#trials-table tbody tr")

        # The best trial, from the top of the page, is the API's, with its step.
        best = api(server, f"/api/v1/experiments/{exp}")["progress"]["best"]
        assert page.inner_text("#best-link") == f"trial {exp}/{best['trial_number']}"
        assert page.inner_text("#best-step").startswith(f"step {best['step']}")
        top_of = "(s) => document.querySelector(s).getBoundingClientRect().top"
        assert page.evaluate(top_of, "#best") < page.evaluate(top_of, "#trials")
        page.screenshot(path=str(ARTIFACTS / "experiment-1280x800.png"))

        # Sorted by a parameter: the rows follow the export's values.
        rows = "#trials-table tbody tr"
        numbers = (
            f"() => Array.from(document.querySelectorAll('{rows}')).map(r => +r.dataset.number)"
        )
        table = api(server, f"/api/v1/experiments/{exp}/export?format=json")
        page.click("#trials-table button.sort[data-key='param.width']")
        by_width = sorted(table["trials"], key=lambda t: (t["params"]["width"], t["number"]))
        assert [t["params"]["width"] for t in by_width] == [
            next(t for t in table["trials"] if t["number"] == n)["params"]["width"]
            for n in page.evaluate(numbers)
        ]

        # Two trials side by side.
        a, b = table["trials"][0], table["trials"][1]
        for t in (a, b):
            page.check(f"#trials-table tr[data-number='{t['number']}'] input.pick")
        page.click("#compare-btn")
        page.wait_for_function("() => document.body.dataset.compared")
        names = page.evaluate(
            "() => document.querySelector('#compare-chart').data.map(t => t.name)"
        )
        assert names == [f"{exp}/{a['number']}", f"{exp}/{b['number']}"]
        page.screenshot(path=str(ARTIFACTS / "compare-1280x800.png"))

        # The CSV download has the API's rows, in the ranking's order.
        with page.expect_download() as info:
            page.click("#download-csv")
        downloaded = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
        ranked = api(server, f"/api/v1/experiments/{exp}/trials?order_by=value&limit=100")["items"]
        assert [int(r["number"]) for r in downloaded] == [t["number"] for t in ranked]
        for row, trial in zip(downloaded, ranked, strict=True):
            assert row["state"] == trial["state"]
            assert float(row["param.lr"]) == trial["params"]["lr"]
            assert (row["ranked_value"] == "") == (trial["ranked_value"] is None)

        # Stop a waiting trial by the name the table shows for it.
        waiting = page.locator(f"{rows}:has(.badge.trial-waiting) td.col-trial a").first
        shown = waiting.inner_text()
        assert re.fullmatch(rf"{exp}/\d+", shown), shown
        number = int(shown.split("/")[1])
        decoy_trial = api(server, f"/api/v1/trials/{number}")  # the id the number could be
        assert decoy_trial["experiment_id"] == first
        said = tuner(desk, admin, "stop-trial", shown)
        assert shown in said
        assert api(server, f"/api/v1/experiments/{exp}/trials/{number}")["state"] == "stopped"
        assert api(server, f"/api/v1/trials/{number}")["state"] == decoy_trial["state"]
        page.reload()
        page.wait_for_selector(f"{rows}[data-number='{number}'] .badge.trial-stopped")

        page.set_viewport_size({"width": 390, "height": 844})
        page.reload()
        page.wait_for_selector("#trials-table tbody tr")
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 391
        page.screenshot(path=str(ARTIFACTS / "experiment-390x844.png"), full_page=True)
        assert tab.errors == [] and tab.alerts == []
    finally:
        tab.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
