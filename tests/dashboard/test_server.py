"""The dashboard's server side, over HTTP (no browser): pages and their headers, static
files and caching, the JSON endpoints under /ui/api and who may call them."""

from __future__ import annotations

import re

import httpx
import pytest

from api.dashboard import data
from tests.dashboard import driver
from tests.dashboard.conftest import XSS_NAME, Seeded

PAGES = ["/ui", "/ui/login", "/ui/experiments/1", "/ui/experiments/1/trials/0", "/ui/workers"]


def get(
    seeded: Seeded, path: str, token: str | None = driver.ADMIN, **kw: object
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kw.pop("headers", {}))  # type: ignore[arg-type]
    return httpx.get(seeded.base + path, headers=headers, timeout=30, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", PAGES)
def test_pages_are_static_shells_with_a_strict_csp(seeded: Seeded, path: str) -> None:
    r = get(seeded, path, token=None)
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    script_src = csp.split("script-src")[1].split(";")[0]
    assert "'self'" in script_src and "'unsafe-inline'" not in script_src
    assert "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    # Every script is a static file: no inline script, no inline handler.
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", r.text, re.S)
    assert scripts
    assert all('src="/ui/static/' in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+=", r.text)


def test_plotly_is_served_from_the_python_package_with_caching(seeded: Seeded) -> None:
    page = get(seeded, "/ui/experiments/1", token=None).text
    src = re.search(r"\"(/ui/static/plotly\.min\.js\?v=[^\"]+)\"", page)
    assert src is not None
    r = get(seeded, src.group(1), token=None, headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip"
    assert "immutable" in r.headers["cache-control"]
    assert r.content.startswith(b"/**\n* plotly.js")
    again = get(seeded, src.group(1), token=None, headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304


def test_static_files_refuse_other_paths(seeded: Seeded) -> None:
    assert get(seeded, "/ui/static/common.js", token=None).status_code == 200
    for bad in ["/ui/static/..%2Fdata.py", "/ui/static/data.py", "/ui/static/nope.js"]:
        assert get(seeded, bad, token=None).status_code == 404


def test_whoami_needs_a_token_and_names_the_role(seeded: Seeded) -> None:
    assert get(seeded, "/ui/api/whoami", token=None).status_code == 401
    assert get(seeded, "/ui/api/whoami", token="nope").status_code == 401
    assert get(seeded, "/ui/api/whoami").json() == {"role": "admin"}
    assert get(seeded, "/ui/api/whoami", token=seeded.viewer_token).json() == {"role": "viewer"}


@pytest.mark.parametrize("action", ["pause", "resume", "cancel"])
def test_a_viewer_cannot_act(seeded: Seeded, action: str) -> None:
    r = httpx.post(f"{seeded.base}/api/v1/experiments/{seeded.running}/{action}",
                   headers={"Authorization": f"Bearer {seeded.viewer_token}"})
    assert r.status_code == 403
    assert r.json()["error"]


def test_curves_are_grouped_by_state_with_null_separators(seeded: Seeded) -> None:
    c = get(seeded, f"/ui/api/experiments/{seeded.finished}/curves").json()
    assert {g["state"] for g in c["groups"]} == {"completed", "stopped"}
    assert sum(g["n"] for g in c["groups"]) == c["shown_trials"] == c["total_trials"] == 15
    for g in c["groups"]:
        assert len(g["x"]) == len(g["y"]) == len(g["number"]) == len(g["trial_id"])
        assert g["x"].count(None) == g["n"] and g["x"][-1] is None
    assert c["best"]["x"][-1] == 27
    assert c["levels"] == [1, 3, 9, 27]
    small = get(seeded, f"/ui/api/experiments/{seeded.finished}/curves?max_trials=4&max_points=5")
    body = small.json()
    assert body["shown_trials"] <= 5  # the 4 chosen plus the best one
    assert len(body["best"]["x"]) <= 6


def test_chart_data_answers_304_while_nothing_changed(seeded: Seeded) -> None:
    for name in ["curves", "parcoords", "importance"]:
        path = f"/ui/api/experiments/{seeded.finished}/{name}"
        first = get(seeded, path)
        assert first.status_code == 200
        again = get(seeded, path, headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304


def test_parcoords_maps_categoricals_to_ticks(seeded: Seeded) -> None:
    pc = get(seeded, f"/ui/api/experiments/{seeded.finished}/parcoords").json()
    dims = {d["label"]: d for d in pc["dimensions"]}
    assert set(dims) == {"lr (log)", "layers", "optimizer", "rung reached", "val_loss"}
    opt = dims["optimizer"]
    assert opt["ticktext"] == ["sgd", "adam", "<script>alert(2)</script>"]
    assert set(opt["values"]) <= {0.0, 1.0, 2.0}
    assert pc["n"] == 15 and len(pc["color"]) == 15
    assert all(-4 <= v <= 0 for v in dims["lr (log)"]["values"])
    # a log axis is drawn at log10 of the value, its ticks say the values themselves
    assert dims["lr (log)"]["ticktext"] == ["0.0001", "0.001", "0.01", "0.1", "1"]
    assert dims["lr (log)"]["tickvals"] == pytest.approx([-4, -3, -2, -1, 0])


def test_log_axis_ticks_are_round_values_of_the_parameter() -> None:
    assert data._log_ticks(1e-4, 1.0) == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    assert data._log_ticks(16, 1024) == pytest.approx([20, 50, 100, 200, 500, 1000])
    assert data._log_ticks(3, 4) == [3, 4]  # no round value inside: the ends
    assert [data._tick_text(v, True) for v in data._log_ticks(16, 1024)] == [
        "20", "50", "100", "200", "500", "1000"]


def test_importance_names_its_method_and_ranks_the_parameters(seeded: Seeded) -> None:
    data.importance_cache.clear()
    imp = get(seeded, f"/ui/api/experiments/{seeded.finished}/importance").json()
    assert "RandomForestRegressor" in imp["method"]
    assert imp["reason"] is None and imp["n_trials"] >= 8
    assert {i["param"] for i in imp["items"]} == {"lr", "layers", "optimizer"}
    assert abs(sum(i["importance"] for i in imp["items"]) - 1.0) < 1e-6
    assert imp["items"][0]["param"] == "lr"  # the objective depends on lr most


def test_importance_explains_an_empty_answer(seeded: Seeded) -> None:
    doc = driver.asha_document("tiny")
    new = driver.create_experiment(seeded.base, doc)
    imp = get(seeded, f"/ui/api/experiments/{new}/importance").json()
    assert imp["items"] == [] and "at least 8" in imp["reason"]
    with driver.client(seeded.base) as c:
        c.post(f"/api/v1/experiments/{new}/cancel").raise_for_status()


def test_workers_show_jobs_and_lost_leases(seeded: Seeded) -> None:
    job = driver.hold_one_job(seeded.base, seeded.running, worker_id="worker-2")
    w = get(seeded, "/ui/api/workers").json()
    ids = {x["worker_id"] for x in w["items"]}
    assert {"worker-0", "worker-1", "worker-2"} <= ids
    holder = next(x for x in w["items"] if x["worker_id"] == "worker-2")
    assert job["job_id"] in [j["job_id"] for j in holder["current_jobs"]]
    assert holder["host"] == "gpu-box-2" and len(holder["gpus"]) == 2
    assert all(x["lost_leases"] == 0 for x in w["items"])
    t = get(seeded, f"/ui/api/trials/{job['trial_id']}/workers").json()
    assert "worker-2" in [x["worker_id"] for x in t["items"]]


def test_json_endpoints_need_a_token(seeded: Seeded) -> None:
    for path in [f"/ui/api/experiments/{seeded.finished}/curves", "/ui/api/workers",
                 f"/ui/api/experiments/{seeded.finished}/importance"]:
        assert get(seeded, path, token=None).status_code == 401
        assert get(seeded, path, token=seeded.viewer_token).status_code == 200
    assert get(seeded, "/ui/api/experiments/999/curves").status_code == 404


def test_the_xss_name_comes_back_verbatim(seeded: Seeded) -> None:
    exp = get(seeded, f"/api/v1/experiments/{seeded.finished}").json()
    assert exp["name"] == XSS_NAME


def test_export_json_lists_every_trial_best_first_with_params_and_metrics(
    seeded: Seeded,
) -> None:
    table = get(seeded, f"/api/v1/experiments/{seeded.finished}/export?format=json").json()
    assert table["experiment_id"] == seeded.finished
    assert (table["metric"], table["mode"]) == ("val_loss", "min")
    assert table["params"] == ["lr", "layers", "optimizer"]
    assert table["metrics"] == ["accuracy"]
    rows = table["trials"]
    assert len(rows) == 15
    ranked = get(seeded, f"/api/v1/experiments/{seeded.finished}/trials?order_by=value&limit=50")
    api_rows = ranked.json()["items"]
    assert [r["number"] for r in rows] == [t["number"] for t in api_rows]
    for row, trial in zip(rows, api_rows, strict=True):
        assert row["params"] == trial["params"]
        assert row["state"] == trial["state"] and row["best_value"] == trial["best_value"]
        assert set(row["metrics"]) == {"accuracy"}
        assert row["created_at"].endswith("Z")


def test_export_csv_rows_equal_the_json_rows(seeded: Seeded) -> None:
    import csv
    import io

    path = f"/api/v1/experiments/{seeded.finished}/export"
    r = get(seeded, path + "?format=csv", token=seeded.viewer_token)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == (
        f'attachment; filename="experiment-{seeded.finished}-trials.csv"')
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0])[:3] == ["number", "state", "bracket"]
    assert list(rows[0])[-4:] == ["param.lr", "param.layers", "param.optimizer",
                                  "metric.accuracy"]
    table = get(seeded, path).json()
    assert [int(r["number"]) for r in rows] == [t["number"] for t in table["trials"]]
    for row, trial in zip(rows, table["trials"], strict=True):
        assert float(row["param.lr"]) == trial["params"]["lr"]
        assert row["param.optimizer"] == trial["params"]["optimizer"]
        assert float(row["best_value"]) == trial["best_value"]
        assert float(row["metric.accuracy"]) == trial["metrics"]["accuracy"]
        assert row["state"] == trial["state"]


def test_export_csv_defuses_text_a_spreadsheet_would_run(seeded: Seeded) -> None:
    """A choice, a checkpoint or a text metric starting with = + - @ is typed by a user or a
    worker; in the CSV it gets a leading ' (a spreadsheet then shows it as text), in the
    JSON it stays as it is. Numbers, negative ones too, are written as numbers."""
    import csv
    import io

    formula = '=HYPERLINK("http://example.invalid","x")'
    document = {
        "name": "csv-injection", "metric": "loss", "mode": "min",
        "space": {"opt": {"type": "categorical", "choices": [formula]},
                  "shift": {"type": "float", "low": -2.0, "high": -1.0}},
        "scheduler": {"type": "asha", "eta": 3, "min_resource": 1, "max_resource": 3},
        "budget": {"max_trials": 1},
    }
    experiment_id = driver.create_experiment(seeded.base, document)
    with driver.client(seeded.base) as c:
        job = c.post(f"/api/v1/experiments/{experiment_id}/claims", json={}).json()
        r = c.post(f"/api/v1/jobs/{job['job_id']}/reports", json={
            "lease_token": job["lease_token"], "step": 1, "value": 0.5,
            "metrics": {"note": "+1+1", "at": "@SUM(1)"}, "checkpoint": "-2+3",
        })
        assert r.status_code == 200, r.text
    path = f"/api/v1/experiments/{experiment_id}/export"
    row = next(csv.DictReader(io.StringIO(get(seeded, path + "?format=csv").text)))
    assert row["param.opt"] == "'" + formula
    assert (row["metric.note"], row["metric.at"], row["checkpoint"]) == (
        "'+1+1", "'@SUM(1)", "'-2+3")
    assert -2.0 <= float(row["param.shift"]) <= -1.0  # a number stays a number
    trial = get(seeded, path).json()["trials"][0]
    assert trial["params"]["opt"] == formula and trial["checkpoint"] == "-2+3"
    assert trial["metrics"] == {"note": "+1+1", "at": "@SUM(1)"}


def test_export_refuses_a_bad_format_and_an_unknown_experiment(seeded: Seeded) -> None:
    bad = get(seeded, f"/api/v1/experiments/{seeded.finished}/export?format=xml")
    assert bad.status_code == 422 and "format" in bad.json()["detail"]
    missing = get(seeded, "/api/v1/experiments/9999/export")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert get(seeded, f"/api/v1/experiments/{seeded.finished}/export",
               token=None).status_code == 401
    first = get(seeded, f"/api/v1/experiments/{seeded.finished}/export")
    again = get(seeded, f"/api/v1/experiments/{seeded.finished}/export",
                headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304


def test_best_so_far_improves_over_time_and_resource(seeded: Seeded) -> None:
    b = get(seeded, f"/ui/api/experiments/{seeded.finished}/best-so-far").json()
    assert b["metric"] == "val_loss" and b["n_results"] >= 15
    n = len(b["value"])
    assert n >= 1 and all(len(b[k]) == n for k in ("time", "resource", "number", "rung"))
    assert b["value"] == sorted(b["value"], reverse=True)  # min: each point beats the last
    assert b["time"] == sorted(b["time"]) and b["resource"] == sorted(b["resource"])
    assert 0 < b["resource"][-1] <= b["resource_spent"]
    table = get(seeded, f"/api/v1/experiments/{seeded.finished}/export").json()
    best_rung_value = min(
        v for t in table["trials"] for v in [t["ranked_value"], t["best_value"]] if v is not None)
    assert b["value"][-1] >= best_rung_value


def test_compare_gives_the_trials_side_by_side(seeded: Seeded) -> None:
    path = f"/ui/api/experiments/{seeded.finished}/compare?trial=3&trial=0"
    c = get(seeded, path).json()
    assert [t["number"] for t in c["trials"]] == [3, 0]
    assert c["params"] == ["lr", "layers", "optimizer"] and c["levels"] == [1, 3, 9, 27]
    for t in c["trials"]:
        assert len(t["x"]) == len(t["y"]) >= 1 and t["x"] == sorted(t["x"])
        assert "0" in t["rung_values"] and set(t["params"]) == {"lr", "layers", "optimizer"}
    missing = get(seeded, f"/ui/api/experiments/{seeded.finished}/compare?trial=999")
    assert missing.status_code == 404
    assert missing.json()["detail"] == f"experiment {seeded.finished} has no trial 999"
    for bad in ["", "?trial=x", "?" + "&".join(f"trial={i}" for i in range(9))]:
        r = get(seeded, f"/ui/api/experiments/{seeded.finished}/compare{bad}")
        assert r.status_code == 422 and "trial" in r.json()["detail"]


def test_a_trial_page_is_named_by_experiment_and_number(seeded: Seeded) -> None:
    page = get(seeded, f"/ui/experiments/{seeded.running}/trials/3", token=None)
    assert page.status_code == 200
    assert f"<title>experiment {seeded.running} › trial 3 · tuner</title>" in page.text
    assert f'data-experiment="{seeded.running}" data-number="3"' in page.text
    trial = get(seeded, f"/api/v1/experiments/{seeded.running}/trials/3").json()
    old = get(seeded, f"/ui/trials/{trial['id']}", token=None, follow_redirects=False)
    assert old.status_code == 307
    assert old.headers["location"] == f"/ui/experiments/{seeded.running}/trials/3"
    assert get(seeded, "/ui/trials/999999", token=None).status_code == 404


def test_export_reads_a_slice_of_the_ranking(seeded: Seeded) -> None:
    path = f"/api/v1/experiments/{seeded.finished}/export?format=json"
    whole = get(seeded, path).json()
    assert whole["total"] == len(whole["trials"]) == 15 and whole["offset"] == 0
    parts = [get(seeded, f"{path}&limit=4&offset={at}").json() for at in range(0, 15, 4)]
    assert all(p["total"] == 15 for p in parts)
    assert [p["offset"] for p in parts] == [0, 4, 8, 12]
    assert [t for p in parts for t in p["trials"]] == whole["trials"]
    assert get(seeded, f"{path}&offset=15").json()["trials"] == []
    for bad in ["&limit=0", "&offset=-1", "&limit=x"]:
        r = get(seeded, path + bad)
        assert r.status_code == 422 and ("limit" in r.json()["detail"]
                                         or "offset" in r.json()["detail"])
    csv_part = get(seeded, f"/api/v1/experiments/{seeded.finished}/export?format=csv&limit=3")
    assert len(csv_part.text.strip().splitlines()) == 1 + 3
