"""``fdflare serve``: the real server (uvicorn on 127.0.0.1) with an injected clock, against the
Helioviewer stand-in and an SWPC flare-list stand-in with faults; real models, JP2 files, SQLite.

In-process tests steer the clock with :class:`ManualClock` and wait on the scheduler's
``idle`` event; the process tests start ``fdflare serve`` with a clock file and wake it
with SIGUSR1, and send it SIGTERM and SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from fdflare.cli import main
from helioviewer_server import JP2, FakeHelioviewer
from swpc_server import FakeSwpc
from test_data import fit_history_map, make_tiny_dataset

SIZE = 32
START = pd.Timestamp("2011-01-01T00:00")
H = pd.Timedelta(hours=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A trained checkpoint, its ensemble.json, and four days of the synthetic Sun as JP2."""
    root = tmp_path_factory.mktemp("serve")
    ds = make_tiny_dataset(root / "tiny", size=SIZE)
    run = root / "run0"
    argv = ["train", "--model", "smallcnn", "--fold", "1", "--labels", str(ds["labels"]),
            "--images", str(ds["images"]), "--out", str(run), "--epochs", "1", "--image-size",
            str(SIZE), "--seed", "0", "--no-pretrained", "--workers", "0", "--batch-size", "16",
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    sun = root / "sun"
    assert main(["synth", "--out", str(sun), "--start", "2011-01-01", "--end", "2011-01-05",
                 "--cadence", "1h", "--image-size", str(SIZE), "--jp2", "--jp2-size", "128",
                 "--quiet"]) == 0  # fmt: skip
    ens = root / "ensemble.json"
    ens.write_text(json.dumps({"format": 1, "members": [
        {"model": "smallcnn", "fold": 1, "checkpoint": "run0/last.ckpt", "calibration": None}]}))  # fmt: skip
    return {"root": root, "ckpt": run / "last.ckpt", "ensemble": ens, "sun": sun}


class ManualClock:
    """The service's clock, moved by the test."""

    def __init__(self, t: str) -> None:
        self.t = pd.Timestamp(t)

    def __call__(self) -> pd.Timestamp:
        return self.t

    def set(self, t: str | pd.Timestamp) -> None:
        self.t = pd.Timestamp(t)


def catalog(world) -> pd.DataFrame:
    from fdflare.acquire.catalog import read_catalog

    return read_catalog(world["sun"] / "catalog.csv")


def synth_jp2(world):
    def read(t: pd.Timestamp) -> bytes:
        h = pd.Timestamp(t).floor("h")
        return (
            world["sun"] / "jp2" / h.strftime("%Y/%m/%d/HMI.m%Y.%m.%d_%H.%M.%S.jp2")
        ).read_bytes()

    return read


def helioviewer(world, **kw) -> FakeHelioviewer:
    kw.setdefault("jp2_for", synth_jp2(world))
    return FakeHelioviewer("2011-01-01T00:00", "2011-01-04T23:00", **kw)


def quick_policy():
    from fdflare.core.http import HttpPolicy

    return HttpPolicy(retries=1, backoff=0.0, read_timeout=5, concurrency=1, sleep=lambda s: None)


class Running:
    """A service started in-process (uvicorn and the scheduler in threads)."""

    def __init__(self, world, store: Path, clock: ManualClock, hv_url: str, swpc_url: str, **kw):
        from fdflare.core.recipe import assumed_study
        from fdflare.forecast.service import load_members
        from fdflare.serve.flarelist import SwpcSource
        from fdflare.serve.run import prepare

        members = load_members([world["ckpt"]], models=["smallcnn"])
        self.clock = clock
        self.svc = prepare(
            members=members, recipe=assumed_study(), store_path=store,
            flares=SwpcSource(swpc_url, policy=quick_policy()), clock=clock, every=H,
            tolerance=pd.Timedelta(minutes=12), port=0, base_urls=[hv_url],
            policy=quick_policy(), log=lambda m: None, **kw,
        )  # fmt: skip
        self.sched = self.svc.scheduler
        self.svc.start()
        assert self.sched.idle.wait(60)
        self.http = httpx.Client(base_url=self.svc.url, timeout=30)

    def step(self, t: str) -> None:
        """Move the clock and wait until the scheduler is idle again."""
        self.sched.idle.clear()
        self.clock.set(t)
        self.sched.wake.set()
        assert self.sched.idle.wait(60), "the scheduler did not settle"

    def get(self, path: str, **params) -> httpx.Response:
        return self.http.get(path, params=params)

    def close(self) -> None:
        self.http.close()
        self.svc.stop()


@pytest.fixture
def service(world, tmp_path):
    """Start a service (``service(clock, hv, swpc, **kw)``); stopped after the test."""
    started: list[Running] = []

    def start(clock, hv, swpc, *, store=None, **kw) -> Running:
        r = Running(
            world, store or tmp_path / "forecasts.sqlite", clock, hv.base_url, swpc.url, **kw
        )
        started.append(r)
        return r

    yield start
    for r in started:
        r.close()


def cycles(rows) -> list[str]:
    return [r["cycle"] for r in rows]


# ------------------------------------------------------------------------------ the list


def test_the_swpc_list_becomes_a_catalog_frame_with_duplicates_dropped_and_bad_rows_counted():
    from fdflare.acquire.catalog import COLUMNS
    from fdflare.acquire.swpc import parse_swpc_flares

    rec = {"begin_time": "2011-01-02T03:04:00Z", "max_class": "m1.2", "end_time": "Unk",
           "max_time": "2011-01-02T03:10:00Z", "satellite": 15}  # fmt: skip
    frame = parse_swpc_flares([
        rec, dict(rec), {**rec, "begin_time": "2011-01-01T23:00:00Z", "max_class": "X2"},
        {**rec, "begin_time": None}, {**rec, "max_class": "big"},
    ])  # fmt: skip
    assert list(frame.columns) == list(COLUMNS)
    assert list(frame["start_time"]) == [
        pd.Timestamp("2011-01-01T23:00"),
        pd.Timestamp("2011-01-02T03:04"),
    ]
    assert list(frame["goes_class"]) == ["X2", "M1.2"]
    assert frame["flux"].tolist() == pytest.approx([2e-4, 1.2e-5])
    assert frame["fl_lon"].isna().all()
    assert frame.attrs["bad_records"] == 2 and frame.attrs["duplicates_dropped"] == 1
    with pytest.raises(ValueError, match="not a JSON array"):
        parse_swpc_flares({"error": "x"})


# ------------------------------------------------------------------------ the scheduler


def test_cycles_follow_the_clock_catch_up_in_order_up_to_a_bound_and_never_twice(world, service):
    clock = ManualClock("2011-01-02T10:20")
    with helioviewer(world) as hv, FakeSwpc(catalog(world), clock) as swpc:
        s = service(clock, hv, swpc, catch_up=3)
        assert cycles(s.get("/api/forecasts").json()["forecasts"]) == ["2011-01-02T10:00:00Z"]
        s.step("2011-01-02T10:59")  # the same cycle: nothing new
        s.step("2011-01-02T11:05")
        s.step("2011-01-02T16:30")  # downtime: 12..16 missed; the newest 3 are caught up
        got = s.get("/api/forecasts").json()["forecasts"]
        assert cycles(got) == ["2011-01-02T10:00:00Z", "2011-01-02T11:00:00Z",
                               "2011-01-02T14:00:00Z", "2011-01-02T15:00:00Z",
                               "2011-01-02T16:00:00Z"]  # fmt: skip
        assert [r["id"] for r in got] == sorted(r["id"] for r in got)  # issued in order
        n = hv.count(JP2)
        s.step("2011-01-02T16:45")
        s.sched.run_cycle(pd.Timestamp("2011-01-02T16:00"))  # asked again: skipped
        assert hv.count(JP2) == n
        assert len(s.get("/api/forecasts").json()["forecasts"]) == 5
        latest = s.get("/api/latest").json()
        assert latest["cycle"] == "2011-01-02T16:00:00Z"
        assert latest["observation_time"] == "2011-01-02T16:00:42Z"


def test_an_outage_of_helioviewer_fails_the_cycle_with_its_reason_and_the_service_goes_on(
    world, service
):
    clock = ManualClock("2011-01-02T10:20")
    with FakeSwpc(catalog(world), clock) as swpc:
        with helioviewer(world) as hv:
            url = hv.base_url
            s = service(clock, hv, swpc)
        # the server is gone: connections are refused
        s.step("2011-01-02T11:10")
        fails = s.get("/api/failures").json()["failures"]
        assert len(fails) == 1 and fails[0]["cycle"] == "2011-01-02T11:00:00Z"
        assert "cannot connect" in fails[0]["reason"] and fails[0]["kind"] == "service"
        health = s.get("/api/health").json()
        assert health["last_good_cycle"] == "2011-01-02T10:00:00Z"
        assert health["last_good_age_s"] == 70 * 60 and health["status"] == "ok"
        assert health["last_failure"]["cycle"] == "2011-01-02T11:00:00Z"
        port = int(url.split(":")[2].split("/")[0])
        hv2 = helioviewer(world)
        _serve_on(hv2, port)
        try:
            s.step("2011-01-02T12:10")
            assert cycles(s.get("/api/forecasts").json()["forecasts"]) == [
                "2011-01-02T10:00:00Z", "2011-01-02T12:00:00Z"]  # fmt: skip
            s.step("2011-01-02T14:20")  # 13:00 and 14:00; the failed 11:00 is not retried
            assert len(s.get("/api/forecasts").json()["forecasts"]) == 4
            s.step("2011-01-02T20:00")
            r = s.get("/api/health")
            assert r.status_code == 200 and r.json()["last_good_cycle"] == "2011-01-02T20:00:00Z"
        finally:
            hv2.stop()
        clock.set("2011-01-03T02:00")  # no cycle run since 20:00: stale
        r = s.get("/api/health")
        assert r.status_code == 503 and r.json()["status"] == "stale"


def _serve_on(hv: FakeHelioviewer, port: int) -> None:
    """Start the Helioviewer stand-in on a given port (the same URL after an outage)."""
    from helioviewer_server import _Handler, _Server

    class Handler(_Handler):
        fake = hv

    hv._httpd = _Server(("127.0.0.1", port), Handler)
    hv._thread = threading.Thread(
        target=hv._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    hv._thread.start()


def test_flare_list_faults_leave_windows_pending_and_it_verifies_when_it_answers(world, service):
    clock = ManualClock("2011-01-01T10:20")
    cat = catalog(world)
    with helioviewer(world) as hv, FakeSwpc(cat, clock) as swpc:
        s = service(clock, hv, swpc, catch_up=48)
        for t in pd.date_range("2011-01-01T11:10", "2011-01-02T08:10", freq="3h"):
            s.step(str(t))
        v = s.get("/api/verification").json()
        assert v["verified"] == 0 and v["pending"] == v["forecasts"] > 0
        for fault in ("500", "garbage", "truncated"):
            swpc.inject(fault, fault)  # the first try and the retry both fail
            before = swpc.requests
            s.step(str(clock() + H))
            assert swpc.requests == before + 2
            state = s.get("/api/health").json()["flare_list"]
            assert state["ok"] is False, fault
            assert {"500": "HTTP 500", "garbage": "not a flare list",
                    "truncated": "not a flare list"}[fault] in state["reason"]  # fmt: skip
            assert s.get("/api/forecasts").json()["forecasts"][-1]["cycle"] == clock().floor(
                "h"
            ).strftime("%Y-%m-%dT%H:%M:%SZ")
        swpc.down()
        s.step(str(clock() + H))
        assert "cannot connect" in s.get("/api/health").json()["flare_list"]["reason"]
        swpc.up()
        s.step("2011-01-03T16:10")
        v = s.get("/api/verification").json()
        assert s.get("/api/health").json()["flare_list"]["ok"] is True
        rows = s.get("/api/forecasts").json()["forecasts"]
        _check_verification(v, rows, cat, clock())


def _check_verification(v, rows, cat, now):
    """The API's verification against an independent count from the store's rows."""
    from fdflare.acquire.goes import class_flux

    strong = cat.loc[class_flux(cat["goes_class"].tolist()) >= 1e-5, "start_time"].to_numpy()
    starts = pd.to_datetime([r["window_start"] for r in rows]).tz_localize(None)
    ends = starts + pd.Timedelta(hours=24)
    span_lo = pd.Timestamp(v["covered"][0][0].rstrip("Z"))
    span_hi = pd.Timestamp(v["covered"][-1][1].rstrip("Z"))  # the list lags the clock a little
    assert len(v["covered"]) == 1 and now - pd.Timedelta(hours=1) <= span_hi <= now
    ready = (ends <= span_hi) & (starts - pd.Timedelta(hours=24) >= span_lo)
    assert v["verified"] == int(ready.sum()) > 0
    assert v["pending"] == int((ends > span_hi).sum())
    prob = np.array([r["probability"] for r in rows])[ready]
    target, persist = [], []
    for t in starts[ready].to_numpy():
        target.append(((strong > t) & (strong < t + np.timedelta64(24, "h"))).any())
        persist.append(((strong > t - np.timedelta64(24, "h")) & (strong <= t)).any())
    target, persist = np.array(target), np.array(persist)
    model = v["scores"]["model"]
    yes = prob >= 0.5
    assert model["tp"] == int((yes & target).sum()) and model["fn"] == int((~yes & target).sum())
    assert model["brier"] == pytest.approx(float(np.mean((prob - target) ** 2)))
    p = v["scores"]["persistence"]
    assert p["tp"] == int((persist & target).sum()) and p["fp"] == int((persist & ~target).sum())
    assert v["events"] == int(target.sum())
    clim = v["scores"]["climatology"]
    assert clim["n"] == model["n"] == p["n"] == v["verified"]
    assert model["bss"] == pytest.approx(1 - model["brier"] / clim["brier"])
    diff = v["difference_vs_persistence"]["tss"]
    if model["tss"] is not None and p["tss"] is not None:
        assert diff["mean"] == pytest.approx(model["tss"] - p["tss"])
    assert diff["verdict"] in (None, "better", "worse", "within noise")


# --------------------------------------------------------------------- the flare history


def test_a_history_map_reads_the_flare_list_up_to_each_observation(world, service, tmp_path):
    from fdflare.analysis.history import flare_history

    _, cal = fit_history_map(world["sun"] / "catalog.csv", "2011-01-01T00:00",
                             "2011-01-04T23:00", tmp_path / "history.json")  # fmt: skip
    clock = ManualClock("2011-01-04T10:20")
    cat = catalog(world)
    with helioviewer(world) as hv, FakeSwpc(cat, clock) as swpc:
        s = service(clock, hv, swpc, calibration=cal)
        s.step("2011-01-04T11:10")
        rows = s.get("/api/forecasts").json()["forecasts"]
        assert cycles(rows) == ["2011-01-04T10:00:00Z", "2011-01-04T11:00:00Z"]
        for r in rows:
            fc = s.get(f"/api/forecasts/{r['id']}").json()
            # the map of the model's score and the flares that started up to the observation
            obs = pd.Timestamp(fc["observation_time"]).tz_localize(None)
            row = flare_history(pd.DatetimeIndex([obs]), cat)
            raw = np.array([fc["members"][0]["raw_probability"]])
            assert fc["probability"] == pytest.approx(
                float(cal(raw, row)[0]), abs=1e-5
            )  # 6 decimals
            said = [n for n in fc["notes"] if n.startswith("flare history up to the observation")]
            assert len(said) == 1
            # SWPC's list ends 30 min before the clock (10:20, then 11:10): a note says so
            end = {"10": "09:50, 10 min", "11": "10:40, 20 min"}[r["cycle"][11:13]]
            assert any(
                f"the flare list covers up to 2011-01-04 {end} before the observation" in n
                for n in fc["notes"]
            ), fc["notes"]
        # without the flare list there is no history: the cycle fails with the reason, and
        # nothing is issued from a history that reads as quiet
        # the dashboard shows the newest forecast's flare history and notes, in a browser
        page = _browse(s.svc.url)
        assert page["errors"] == [] and page["console"] == [] and page["requests"] == [s.svc.url]
        assert page["flare_history"] == said[0][len("flare history up to the observation: ") :]
        assert (
            "the flare list covers up to 2011-01-04 10:40, 20 min before" in page["forecast_notes"]
        )
        swpc.down()
        images = hv.count(JP2)
        s.step("2011-01-04T12:10")
        assert hv.count(JP2) == images  # the list is asked first: no image fetched for nothing
        fails = s.get("/api/failures").json()["failures"]
        assert [f["cycle"] for f in fails] == ["2011-01-04T12:00:00Z"]
        assert fails[0]["kind"] == "flare_list"
        assert "the flare history needs the flare list: " in fails[0]["reason"]
        assert "cannot connect" in fails[0]["reason"]
        swpc.up()
        s.step("2011-01-04T13:10")
        rows = s.get("/api/forecasts").json()["forecasts"]
        assert cycles(rows)[-1] == "2011-01-04T13:00:00Z" and len(rows) == 3
        # cycles caught up at once read the history from one answer of the list (the
        # verification after each cycle asks it too)
        before = swpc.requests
        s.step("2011-01-04T16:10")
        rows = s.get("/api/forecasts").json()["forecasts"]
        assert cycles(rows)[-3:] == ["2011-01-04T14:00:00Z", "2011-01-04T15:00:00Z",
                                     "2011-01-04T16:00:00Z"]  # fmt: skip
        assert swpc.requests - before == 1 + 3


def test_the_history_needs_the_72_hours_before_the_observation_covered(world, tmp_path):
    from fdflare.core.errors import DownloadError
    from fdflare.serve.flarelist import HistoryReader, SwpcSource
    from fdflare.serve.state import ServiceState

    clock = ManualClock("2011-01-04T10:20")
    obs = pd.Timestamp("2011-01-04T10:00:42")
    with FakeSwpc(catalog(world), clock) as swpc:
        source = SwpcSource(swpc.url, policy=quick_policy())
        source.span = pd.Timedelta(days=2)  # a list of the last two days only
        state = ServiceState(tmp_path / "state.sqlite")
        try:
            read = HistoryReader(source, state, clock)
            with pytest.raises(DownloadError, match="do not cover") as info:
                read(obs)
            assert "2011-01-01 10:00 to 2011-01-04 09:50" in str(info.value)
            assert "covered: 2011-01-02 10:20 to 2011-01-04 09:50" in str(info.value)
            source.span = pd.Timedelta(days=7)
            with pytest.raises(DownloadError, match="do not cover"):
                read(obs)  # within a minute on the clock: the same answer, not asked again
            clock.set("2011-01-04T10:21")
            flares, notes = read(obs)
            assert state.coverage() == [
                (pd.Timestamp("2010-12-28T10:21"), pd.Timestamp("2011-01-04T09:51"))
            ]
            assert (flares["start_time"] <= clock()).all() and len(flares) > 0
            assert notes == [
                "the flare list covers up to 2011-01-04 09:51, 9 min before the observation: "
                "a flare that began since may not be listed yet"
            ]
        finally:
            state.close()


def test_serve_takes_a_history_map_where_predict_asks_for_its_catalog(world, tmp_path, capsys):
    hist, _ = fit_history_map(world["sun"] / "catalog.csv", "2011-01-01T00:00",
                              "2011-01-02T23:00", tmp_path / "history.json")  # fmt: skip
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_text("not a checkpoint")
    argv = [sys.executable, "-m", "fdflare", "serve", "--flare-list-url", "http://127.0.0.1:9/x",
            "--base-url", "http://127.0.0.1:9/v2/", "--checkpoint", str(garbage), "--calibration",
            str(hist), "--store", str(tmp_path / "s.sqlite"), "--port", "0"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    # the map was read and taken: what fails is the checkpoint, after it
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "garbage.ckpt" in r.stderr
    assert "calibration map" not in r.stderr and "cannot read checkpoint" in r.stderr
    listing = tmp_path / "images.txt"
    listing.write_text("2011/01/01/HMI.m2011.01.01_00.00.00.png\n")
    code = main(["predict", "--checkpoint", str(world["ckpt"]), "--images", str(listing), "--out",
                 str(tmp_path / "p.csv"), "--calibration", str(hist), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "a history map reads the flare history: give --catalog FILE" in err


def test_a_flare_seen_growing_is_one_flare_in_the_history(world, tmp_path):
    """SWPC lists a flare in progress with its class so far: two fetches, one flare counted."""
    from fdflare.acquire.catalog import read_catalog
    from fdflare.analysis.history import flare_history
    from fdflare.serve.flarelist import HistoryReader, SwpcSource
    from fdflare.serve.state import ServiceState

    cat = tmp_path / "growing.csv"
    cat.write_text("start_time,goes_class,fl_lon,fl_lat\n2011-01-04 06:27:00,C5.0,,\n"
                   "2011-01-04 02:00:00,C1.0,,\n")  # fmt: skip
    clock = ManualClock("2011-01-04T06:35")
    obs = pd.Timestamp("2011-01-04T09:00:42")
    state = ServiceState(tmp_path / "state.sqlite")
    with FakeSwpc(read_catalog(cat), clock) as swpc:
        try:
            read = HistoryReader(SwpcSource(swpc.url, policy=quick_policy()), state, clock)
            read(obs)  # 06:35: the flare at C5.0 so far
            cat.write_text(cat.read_text().replace("C5.0", "M2.0"))
            swpc.catalog = read_catalog(cat)
            clock.set("2011-01-04T09:40")
            flares, _ = read(obs)  # 09:40: the same flare, peaked at M2.0
        finally:
            state.close()
    assert len(flares) == 2, flares
    row = flare_history(pd.DatetimeIndex([obs]), flares)[0]
    assert row[0] == pytest.approx(np.log10(2e-5))  # the largest class it reached
    assert row[2] == pytest.approx(np.log1p(2))  # two flares >= C1.0, not three


# ---------------------------------------------------------------------------------- API


@pytest.fixture(scope="module")
def filled(world, tmp_path_factory):
    """A service that ran two days of hourly cycles (kept running for the API tests)."""
    from fdflare.core.http import HttpPolicy  # noqa: F401  (the stand-ins' policy)

    store = tmp_path_factory.mktemp("filled") / "forecasts.sqlite"
    clock = ManualClock("2011-01-01T06:20")
    hv = helioviewer(world).start()
    swpc = FakeSwpc(catalog(world), clock).start()
    r = Running(world, store, clock, hv.base_url, swpc.url, catch_up=48)
    r.step("2011-01-03T12:10")  # the newest 48 cycles caught up
    r.step("2011-01-03T13:10")
    yield r
    r.close()
    swpc.stop()
    hv.stop()


def test_the_api_serves_latest_ranges_one_forecast_and_the_scoreboard(filled):
    s = filled
    latest = s.get("/api/latest").json()
    assert latest["cycle"] == "2011-01-03T13:00:00Z"
    assert latest["recipe"]["threshold"] == "M1.0" and latest["recipe"]["window"] == "24h"
    got = s.get("/api/forecasts", start="2011-01-02T10:00", end="2011-01-02T13:00").json()
    assert cycles(got["forecasts"]) == [f"2011-01-02T{h}:00:00Z" for h in (10, 11, 12)]
    csv = s.get("/api/forecasts", start="2011-01-02T10:00", end="2011-01-02T13:00", format="csv")
    assert csv.headers["content-type"].startswith("text/csv")
    frame = pd.read_csv(__import__("io").StringIO(csv.text))
    assert list(frame["cycle"]) == cycles(got["forecasts"])
    assert frame["probability"].tolist() == [r["probability"] for r in got["forecasts"]]
    one = s.get(f"/api/forecasts/{latest['id']}").json()
    assert one["probability"] == latest["probability"] and len(one["members"]) == 1
    assert one["members"][0]["probability"] == pytest.approx(latest["probability"])
    sb = s.get("/api/scoreboard/latest").json()["forecast_submission"]
    fd = sb["full_disk_forecasts"][0]
    assert sb["issue_time"] == latest["cycle"] and sb["model"]["short_name"] == "fdflare"
    assert fd["prediction_window"] == {
        "start_time": latest["window_start"],
        "end_time": latest["window_end"],
    }
    assert fd["probabilities"][0]["probability_value"] == latest["probability"]
    assert fd["probabilities"][0]["flare_class"] == ">=M1.0"
    schema = s.get("/openapi.json").json()
    assert {"/api/latest", "/api/forecasts", "/api/verification", "/api/health"} <= set(
        schema["paths"]
    )
    assert s.get("/docs").status_code == 404  # its page would load scripts from a CDN


@pytest.mark.parametrize(
    ("path", "params", "status", "words"),
    [
        ("/api/forecasts", {"start": "soon"}, 400, "start: invalid time 'soon'"),
        ("/api/forecasts", {"start": "2011-01-03", "end": "2011-01-02"}, 400, "not after start"),
        ("/api/forecasts", {"limit": "0"}, 400, "limit"),
        ("/api/forecasts", {"limit": "many"}, 400, "limit"),
        ("/api/forecasts", {"format": "xml"}, 400, "format"),
        ("/api/forecasts/abc", {}, 400, "forecast_id"),
        ("/api/forecasts/99999", {}, 404, "no forecast 99999"),
        ("/api/nothing", {}, 404, "Not Found"),
    ],
)
def test_bad_queries_get_a_4xx_with_a_one_line_reason(filled, path, params, status, words):
    r = filled.get(path, **params)
    assert r.status_code == status
    body = r.json()
    assert set(body) == {"error"} and words in body["error"] and "\n" not in body["error"]


def test_the_verification_matches_the_store_and_the_catalog(filled, world):
    v = filled.get("/api/verification").json()
    rows = filled.get("/api/forecasts").json()["forecasts"]
    assert v["forecasts"] == len(rows) == 50  # 06:00, then the 48 caught up, then 13:00
    _check_verification(v, rows, catalog(world), filled.clock())
    assert {"model", "persistence", "climatology"} == set(v["scores"])
    assert sum(b["n"] for b in v["reliability"]) == v["verified"]


def _browse(url: str, shot: Path | None = None) -> dict:
    from playwright.sync_api import sync_playwright

    found: dict = {"console": [], "requests": [], "errors": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: found["console"].append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: found["errors"].append(str(e)))
            page.on("request", lambda r: found["requests"].append(r.url))
            page.goto(url, wait_until="load")
            found["text"] = {
                k: page.inner_text(f"#{k}") for k in ("probability", "window", "observation", "age")
            }
            found["rows"] = page.eval_on_selector_all(
                "#verification tbody tr",
                "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText))",
            )
            found["event"] = page.inner_text("#current .event")
            found["circles"] = page.eval_on_selector_all(
                "#magnetogram circle", "cs => cs.map(c => c.getAttribute('class'))"
            )
            found["flares"] = page.eval_on_selector_all("svg.history line.flare", "ls => ls.length")
            found["refresh"] = page.get_attribute('meta[http-equiv="refresh"]', "content")
            for key in ("how-sure", "flare-history", "forecast-notes"):
                el = page.query_selector(f"#{key}")
                found[key.replace("-", "_")] = None if el is None else el.inner_text()
            if shot is not None:
                page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    return found


def test_the_dashboard_shows_the_stores_values_and_loads_nothing_else(filled, world):
    from fdflare.acquire.goes import class_flux

    s = filled
    found = _browse(s.svc.url)
    assert found["console"] == [] and found["errors"] == []
    assert found["requests"] == [s.svc.url]
    latest = s.get("/api/latest").json()
    assert found["text"]["probability"] == f"{latest['probability']:.3f}"
    assert found["text"]["window"] == f"{latest['window_start']} to {latest['window_end']}"
    assert found["text"]["observation"] == latest["observation_time"]
    assert found["text"]["age"] == "9 min"  # 13:10 on the clock, observed 13:00:42
    assert found["event"] == "P(flare >= M1.0 in the next 24 h)"
    assert found["circles"] == ["limb", "c70"]
    cat = catalog(world)
    strong = cat[
        (class_flux(cat["goes_class"].tolist()) >= 1e-5) & (cat["start_time"] <= s.clock())
    ]
    assert found["flares"] == len(strong) > 0
    v = s.get("/api/verification").json()
    shown = {r[0]: r for r in found["rows"]}
    for kind in ("model", "persistence", "climatology"):
        sc = v["scores"][kind]
        assert shown[kind][1] == str(sc["n"])
        assert shown[kind][4] == f"{sc['brier']:.3f}"
        assert shown[kind][2] == ("n/a" if sc["tss"] is None else f"{sc['tss']:.3f}")
    assert int(found["refresh"]) > 0
    # how sure the model's lead over persistence is, as the API gives it
    diff = v["difference_vs_persistence"]["tss"]
    assert diff["mean"] is not None and diff["days"] < 10  # two days of cycles
    assert found["how_sure"] == (
        f"TSS against persistence: difference {diff['mean']:+.3f} (too few days to say how "
        f"sure ({diff['days']}; 10 needed))"
    )


# ---------------------------------------------------------------------------- processes


STARTED: list[Process] = []


@pytest.fixture(autouse=True)
def _no_server_left_behind():
    """A test that fails half-way leaves no ``fdflare serve`` running."""
    yield
    while STARTED:
        p = STARTED.pop()
        if getattr(p, "proc", None) is not None and p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(timeout=30)


class Process:
    """``fdflare serve`` as a child process on a clock file."""

    @classmethod
    def plain(cls, tmp: Path, *args: str) -> Process:
        """``fdflare serve ARGS`` (no clock file, no stand-ins)."""
        p = cls.__new__(cls)
        p.err = tmp / f"serve_{time.monotonic_ns()}.err"
        p.spawn(list(args))
        return p

    def __init__(self, world, tmp: Path, store: Path, hv_url: str, swpc_url: str, *extra: str):
        self.clock_file = tmp / "clock.txt"
        if not self.clock_file.exists():
            self.clock_file.write_text("2011-01-02T10:20:00\n")
        self.err = tmp / f"serve_{time.monotonic_ns()}.err"
        argv = ["--ensemble", str(world["ensemble"]),
                "--store", str(store), "--port", "0", "--clock", str(self.clock_file),
                "--base-url", hv_url, "--flare-list-url", swpc_url, "--retries", "0",
                "--read-timeout", "60", *extra]  # fmt: skip
        self.spawn(argv)

    def spawn(self, args: list[str]) -> None:
        argv = [sys.executable, "-m", "fdflare", "serve", *args]
        STARTED.append(self)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=open(self.err, "w"), env=env
        )
        self.url = None
        deadline = time.monotonic() + 120
        while self.url is None and time.monotonic() < deadline and self.proc.poll() is None:
            for line in self.err.read_text().splitlines():
                if "listening on " in line:
                    self.url = line.split("listening on ")[1].split()[0]
            time.sleep(0.05)
        assert self.url, self.err.read_text()

    def set_clock(self, t: str) -> None:
        tmp = self.clock_file.with_suffix(".tmp")
        tmp.write_text(t + "\n")
        os.replace(tmp, self.clock_file)  # the server never reads a half-written time
        self.proc.send_signal(signal.SIGUSR1)

    def wait_for(self, what, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = what()
            if got:
                return got
            assert self.proc.poll() is None, self.err.read_text()
            time.sleep(0.05)
        raise AssertionError(f"timed out; stderr: {self.err.read_text()}")

    def api(self, path: str):
        try:
            return httpx.get(self.url.rstrip("/") + path, timeout=10).json()
        except httpx.HTTPError:
            return None

    def cycles(self) -> list[str]:
        got = self.api("/api/forecasts")
        return [] if got is None else cycles(got["forecasts"])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def file_clock(path: Path):
    return lambda: (
        pd.Timestamp(path.read_text().strip())
        if path.exists()
        else pd.Timestamp("2011-01-02T10:20")
    )


def test_sigterm_finishes_the_cycle_in_flight_and_closes_the_store(world, tmp_path):
    store = tmp_path / "forecasts.sqlite"
    with (
        helioviewer(world, hold_bodies_after=1) as hv,
        FakeSwpc(catalog(world), file_clock(tmp_path / "clock.txt")) as swpc,
    ):
        p = Process(world, tmp_path, store, hv.base_url, swpc.url)
        p.wait_for(lambda: p.cycles() == ["2011-01-02T10:00:00Z"])
        p.wait_for(lambda: flare_list_at(p) == "2011-01-02T10:20:00Z")  # cycle 10:00 done
        p.set_clock("2011-01-02T11:05:00")
        p.wait_for(lambda: hv.count(JP2) == 2)  # the 11:00 image is on its way, held
        p.proc.send_signal(signal.SIGTERM)
        p.wait_for(lambda: _refused(p.url))  # the API stopped: the signal was handled
        assert p.proc.poll() is None  # ... and the cycle is still in flight
        hv.gate.set()
        assert p.proc.wait(timeout=60) == 0
    err = p.err.read_text()
    assert "cycle 2011-01-02T11:00:00Z: P(flare >= M1.0 in the next 24 h)" in err
    assert err.strip().endswith("stopped; the store is closed") and "Traceback" not in err
    import sqlite3

    db = sqlite3.connect(store)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert not Path(str(store) + "-wal").exists() or Path(str(store) + "-wal").stat().st_size == 0


def _refused(url: str) -> bool:
    host, port = url.split("//")[1].rstrip("/").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return True
    return False


def flare_list_at(p: Process) -> str | None:
    return ((p.api("/api/health") or {}).get("flare_list") or {}).get("at")


@pytest.mark.slow  # several processes, each loading torch: .ci/run runs it
def test_a_restart_in_mid_cycle_loses_nothing_and_issues_nothing_twice(world, tmp_path):
    store = tmp_path / "forecasts.sqlite"
    clock = file_clock(tmp_path / "clock.txt")
    with helioviewer(world, hold_bodies_after=2) as hv, FakeSwpc(catalog(world), clock) as swpc:
        p = Process(world, tmp_path, store, hv.base_url, swpc.url)
        p.wait_for(lambda: p.cycles() == ["2011-01-02T10:00:00Z"])
        p.wait_for(lambda: flare_list_at(p) == "2011-01-02T10:20:00Z")  # cycle 10:00 done
        # killed between issuing 11:00 and verifying it: the flare list request is held
        swpc.inject("hold")
        swpc.arrived.clear()
        p.set_clock("2011-01-02T11:05:00")
        p.wait_for(swpc.arrived.is_set)
        p.proc.kill()
        p.proc.wait(timeout=30)
        swpc.release.set()
        p = Process(world, tmp_path, store, hv.base_url, swpc.url)
        p.wait_for(lambda: flare_list_at(p) == "2011-01-02T11:05:00Z")
        assert p.cycles() == ["2011-01-02T10:00:00Z", "2011-01-02T11:00:00Z"]
        # killed while fetching the 12:00 magnetogram (before issuing): rerun after the restart
        p.set_clock("2011-01-02T12:05:00")
        p.wait_for(lambda: hv.count(JP2) == 3)
        p.proc.kill()
        p.proc.wait(timeout=30)
        hv.gate.set()
        p = Process(world, tmp_path, store, hv.base_url, swpc.url)
        p.wait_for(lambda: len(p.cycles()) == 3)
        assert p.cycles() == [f"2011-01-02T{h}:00:00Z" for h in (10, 11, 12)]
        assert p.api("/api/failures")["count"] == 0
        assert p.stop() == 0


def test_bad_ensemble_unwritable_store_and_port_in_use_are_one_line_before_serving(
    world, tmp_path, read_only_dir
):
    def run(*extra: str) -> tuple[int, str]:
        argv = [sys.executable, "-m", "fdflare", "serve", "--flare-list-url", "http://127.0.0.1:9/x",
                "--base-url", "http://127.0.0.1:9/v2/", *extra]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
        return r.returncode, r.stderr

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": 1, "members": [{"checkpoint": "nothing.ckpt"}]}))
    code, err = run("--ensemble", str(bad), "--store", str(tmp_path / "s.sqlite"), "--port", "0")
    assert code == 2 and err.count("\n") == 1 and "nothing.ckpt" in err
    assert not (tmp_path / "s.sqlite").exists()
    code, err = run(
        "--ensemble",
        str(world["ensemble"]),
        "--store",
        str(read_only_dir / "s.sqlite"),
        "--port",
        "0",
    )
    assert code == 2 and err.count("\n") == 1 and "s.sqlite" in err and "Traceback" not in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code, err = run(
            "--ensemble",
            str(world["ensemble"]),
            "--store",
            str(tmp_path / "p.sqlite"),
            "--port",
            str(port),
        )
    assert code == 3 and err.count("\n") == 1 and f"127.0.0.1:{port}" in err and "in use" in err
    code, err = run("--ensemble", str(world["ensemble"]), "--port", "0")
    assert code == 2 and "--store" in err
    code, err = run(
        "--checkpoint", str(tmp_path / "gone.ckpt"), "--store", str(tmp_path / "g.sqlite")
    )
    assert code == 2 and err.count("\n") == 1 and "gone.ckpt" in err
    # nothing is left behind by a start that failed: no store, no lock beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "read-only"]
    assert not list(read_only_dir.iterdir())


@pytest.mark.slow  # several processes, each loading torch: .ci/run runs it
def test_forecast_store_runs_beside_serve_on_one_store(world, tmp_path):
    store = tmp_path / "forecasts.sqlite"
    with (
        helioviewer(world) as hv,
        FakeSwpc(catalog(world), file_clock(tmp_path / "clock.txt")) as swpc,
    ):
        p = Process(world, tmp_path, store, hv.base_url, swpc.url)
        p.wait_for(lambda: flare_list_at(p) == "2011-01-02T10:20:00Z")
        argv = [sys.executable, "-m", "fdflare", "forecast", "--ensemble", str(world["ensemble"]),
                "--time", "2011-01-02T08:30", "--base-url", hv.base_url, "--store", str(store),
                "--accelerator", "cpu", "--json"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        other = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        p.set_clock("2011-01-02T11:05:00")  # serve writes its cycle while forecast writes
        out, err = other.communicate(timeout=120)
        assert other.returncode == 0, err
        p.wait_for(lambda: len(p.api("/api/forecasts")["forecasts"]) == 3)
        rows = p.api("/api/forecasts")["forecasts"]
        assert [r["cycle"] for r in rows] == [None, "2011-01-02T10:00:00Z", "2011-01-02T11:00:00Z"]
        assert rows[0]["requested_time"] == "2011-01-02T08:30:00Z"
        assert rows[0]["probability"] == pytest.approx(json.loads(out)["probability"], abs=1e-6)
        p.set_clock("2011-01-02T12:05:00")  # the next verification sees all three
        p.wait_for(lambda: (p.api("/api/verification") or {}).get("forecasts") == 4)
        assert p.stop() == 0


@pytest.mark.slow
def test_the_newcomer_path_demo_then_serve_its_year(tmp_path):
    """README: `fdflare demo`, then `fdflare serve --demo` replays the demo's data (tiny here)."""
    from fdflare.acquire.catalog import read_catalog
    from fdflare.acquire.goes import class_flux

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--folds", "2", "--days", "100", "--cadence", "12h",
                 "--image-size", "32", "--epochs", "1", "--quiet"]) == 0  # fmt: skip
    members = json.loads((out / "ensemble.json").read_text())["members"]
    assert [m["fold"] for m in members] == [2] and (out / members[0]["checkpoint"]).is_file()
    assert len(list((out / "synth" / "jp2").rglob("*.jp2"))) == 200
    p = Process.plain(tmp_path, "--demo", str(out), "--port", "0")
    p.wait_for(lambda: (p.api("/api/health") or {}).get("status") == "replay done", timeout=300)
    v = p.api("/api/verification")
    rows = p.api("/api/forecasts")["forecasts"]
    assert len(rows) == v["forecasts"] == 200 and rows[0]["cycle"] == "2011-01-01T00:00:00Z"
    assert v["pending"] == 0 and v["verified"] + v["uncovered"] == 200 and v["verified"] >= 195
    cat = read_catalog(out / "synth" / "catalog.csv")
    _check_verification(v, rows, cat, pd.Timestamp(v["at"].rstrip("Z")))
    strong = cat[class_flux(cat["goes_class"].tolist()) >= 1e-5]
    assert 0 < v["events"] <= len(rows) and len(strong) > 0
    found = _browse(p.url)
    assert found["console"] == [] and found["requests"] == [p.url]
    assert p.stop() == 0
    # run again: it resumes where it stopped (the replay is done: nothing is issued twice)
    p = Process.plain(tmp_path, "--demo", str(out), "--port", "0")
    p.wait_for(lambda: (p.api("/api/health") or {}).get("status") == "replay done", timeout=300)
    assert len(p.api("/api/forecasts")["forecasts"]) == 200
    assert p.stop() == 0


@pytest.mark.slow  # a server process: .ci/run runs it
def test_a_replay_through_the_cli_issues_the_history_map_every_cycle(world, tmp_path):
    from fdflare.analysis.history import flare_history

    hist, cal = fit_history_map(world["sun"] / "catalog.csv", "2011-01-01T00:00",
                                "2011-01-04T23:00", tmp_path / "history.json")  # fmt: skip
    # the Sun's first flare is on 2 January, so its catalog covers from then; a flare of 31
    # December makes it cover the 72 h before every cycle of 4 January
    flares = tmp_path / "flares.csv"
    lines = (world["sun"] / "catalog.csv").read_text().splitlines()
    header = lines[0].split(",")
    early = {"start_time": "2010-12-31 12:00:00", "goes_class": "C1.0"}
    flares.write_text("\n".join([lines[0], ",".join(early.get(c, "") for c in header),
                                  *lines[1:]]) + "\n")  # fmt: skip
    p = Process.plain(tmp_path, "--checkpoint", str(world["ckpt"]), "--calibration", str(hist),
                      "--archive", str(world["sun"] / "jp2"), "--catalog", str(flares), "--replay",
                      "2011-01-04T00:00..2011-01-04T05:00", "--store",
                      str(tmp_path / "s.sqlite"), "--port", "0")  # fmt: skip
    p.wait_for(lambda: (p.api("/api/health") or {}).get("status") == "replay done", timeout=120)
    rows = p.api("/api/forecasts")["forecasts"]
    assert cycles(rows) == [f"2011-01-04T0{h}:00:00Z" for h in range(6)]
    assert p.api("/api/failures")["failures"] == []
    from fdflare.acquire.catalog import read_catalog

    cat = read_catalog(flares)
    for r in rows:
        fc = p.api(f"/api/forecasts/{r['id']}")
        obs = pd.Timestamp(fc["observation_time"]).tz_localize(None)
        row = flare_history(pd.DatetimeIndex([obs]), cat)
        raw = np.array([fc["members"][0]["raw_probability"]])
        assert fc["probability"] == pytest.approx(float(cal(raw, row)[0]), abs=1e-5)
        assert fc["notes"][0].startswith("flare history up to the observation: largest flare ")
    assert p.stop() == 0


def test_the_attribution_map_is_made_and_shown_when_asked(world, service, tmp_path):
    clock = ManualClock("2011-01-02T10:20")
    with helioviewer(world) as hv, FakeSwpc(catalog(world), clock) as swpc:
        s = service(clock, hv, swpc, explain="gradcam")
        from fdflare.serve.state import ServiceState

        state = ServiceState(tmp_path / "forecasts.sqlite")
        try:
            png, geo, attribution = state.image(s.get("/api/latest").json()["id"])
        finally:
            state.close()
        assert png.startswith(b"\x89PNG") and attribution.startswith(b"\x89PNG")
        assert set(geo) == {"center_x", "center_y", "radius_px"}
        page = s.get("/").text
        assert 'id="attribution"' in page and "attribution map" in page


def test_hek_as_the_flare_list(tmp_path):
    from fdflare.serve.flarelist import HekSource
    from hek_server import FakeHEK, make_records

    now = pd.Timestamp("2011-02-16T12:00")
    with FakeHEK() as hek:
        got = HekSource(hek.url, policy=quick_policy()).fetch(now)
    assert got.covered == (now - pd.Timedelta(days=7), now - pd.Timedelta(minutes=30))
    starts = {pd.Timestamp(r["event_starttime"]) for r in make_records()
              if r.get("fl_goescls") and r["frm_name"] == "SWPC"}  # fmt: skip
    inside = sorted(t for t in starts if now - pd.Timedelta(days=7) <= t <= now)
    assert sorted(got.catalog["start_time"]) == inside and len(inside) > 0
    assert list(got.catalog.columns) == ["start_time", "goes_class", "flux", "fl_lon", "fl_lat"]


def test_sigterm_while_the_models_load_releases_everything(world, tmp_path, capsys, monkeypatch):
    """Stopped before it serves: exit 130, no store, no lock file, the handler restored."""
    import fdflare.commands._common as common

    loading, real = threading.Event(), common.load_members_and_map

    def slow_load(args, **kwargs):
        loading.set()
        threading.Event().wait(60)  # a SIGTERM ends the wait (the handler raises)
        return real(args, **kwargs)  # pragma: no cover - only without the handler

    monkeypatch.setattr(common, "load_members_and_map", slow_load)
    before = signal.getsignal(signal.SIGTERM)
    store = tmp_path / "s.sqlite"
    killer = threading.Thread(
        target=lambda: loading.wait(60) and os.kill(os.getpid(), signal.SIGTERM)
    )
    killer.start()
    argv = ["serve", "--ensemble", str(world["ensemble"]), "--store", str(store), "--port", "0",
            "--base-url", "http://127.0.0.1:9/v2/", "--flare-list-url", "http://127.0.0.1:9/x"]  # fmt: skip
    code = main(argv)
    killer.join(10)
    assert code == 130 and "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no store, no lock
    assert signal.getsignal(signal.SIGTERM) == before
