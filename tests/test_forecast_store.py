"""``fdflare forecast`` from a local archive, into the SQLite store and an append-only history.

The archive is the synthetic Sun's real JPEG 2000 tree (``synth --jp2``); the store is a
real SQLite file written by real processes; a full disk is a real ``RLIMIT_FSIZE`` on a
real subprocess (the kernel refuses the write with ``EFBIG``, as a full disk refuses it
with ``ENOSPC``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from fdflare.cli import main
from helioviewer_server import FakeHelioviewer
from test_forecast import cli, forecast_argv, server, world  # noqa: F401 (the fixture)

SRC = str(Path(__file__).resolve().parents[1] / "src")


def archive_argv(world, *extra: str, time: str = "2011-01-01T10:00") -> list[str]:  # noqa: F811
    return ["forecast", "--time", time, "--archive", str(world["sun"] / "jp2"),
            "--checkpoint", str(world["ckpt0"]), "--accelerator", "cpu", *extra]  # fmt: skip


def subprocess_cli(argv: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "fdflare", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


# --------------------------------------------------------------------------- the archive


def test_a_forecast_from_the_archive_is_the_one_helioviewer_gives_for_the_same_file(
    world,  # noqa: F811
    capsys,
):
    from fdflare.prepare.jp2 import read_jp2_header

    code, out, err = cli(archive_argv(world, "--json"), capsys)
    assert code == 0, err
    fc = json.loads(out)
    name = "2011/01/01/HMI.m2011.01.01_10.00.00.jp2"
    assert fc["source"]["image_id"] == name
    assert fc["source"]["name"] == f"archive:{(world['sun'] / 'jp2').resolve()}"
    assert fc["source"]["base_url"] is None
    date_obs = pd.Timestamp(read_jp2_header(world["sun"] / "jp2" / name)["DATE-OBS"]).floor("s")
    assert fc["observation_time"] == date_obs.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert fc["window_start"] == fc["observation_time"]
    with server(world) as hv:  # the same file through the loopback Helioviewer
        code, out2, err = cli(forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]), "--json"), capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(out2)["probability"] == pytest.approx(fc["probability"], abs=1e-9)


def test_the_archive_keeps_the_tolerance_and_the_exit_statuses(world, tmp_path, capsys):  # noqa: F811
    from fdflare.forecast.store import ForecastStore

    db = tmp_path / "s.sqlite"
    code, out, err = cli(archive_argv(world, "--store", str(db), time="2011-01-05T00:00"), capsys)
    assert code == 4 and out == "" and err.count("\n") == 1
    with ForecastStore.open(db, create=False) as store:  # the failed attempt is kept
        (failed,) = store.failures()
        assert store.forecasts() == [] and failed["kind"] == "no_observation"
        assert (
            failed["requested_time"] == "2011-01-05T00:00:00Z" and "closest is" in failed["reason"]
        )
    assert "the closest is 2011-01-02T2" in err and "HMI.m2011.01.02_23.00.00.jp2" in err
    assert "--tolerance" in err
    code, out, err = cli(archive_argv(world, "--tolerance", "3d", time="2011-01-05T00:00"), capsys)
    assert code == 0, err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here\n")
    afile = tmp_path / "a.txt"
    afile.write_text("x\n")
    for bad, words in ((tmp_path / "nope", "no such archive"), (empty, "holds no HMI"),
                       (afile, "is a file")):  # fmt: skip
        argv = archive_argv(world)
        argv[argv.index("--archive") + 1] = str(bad)
        code, out, err = cli(argv, capsys)
        assert code == 2 and out == "" and err.count("\n") == 1 and words in err, err
    code, out, err = cli([*archive_argv(world), "--base-url", "http://127.0.0.1:9/v2/"], capsys)
    assert code == 2 and "one source" in err


def test_the_archive_never_serves_a_path_outside_its_root(world, tmp_path):  # noqa: F811
    from fdflare.core.errors import InputError
    from fdflare.forecast.archive import LocalArchive

    root = tmp_path / "mirror"
    src = world["sun"] / "jp2" / "2011" / "01" / "01"
    day = root / "2011" / "01" / "01"
    day.mkdir(parents=True)
    for h in (3, 9):
        name = f"HMI.m2011.01.01_{h:02d}.00.00.jp2"
        (day / name).write_bytes((src / name).read_bytes())
    secret = tmp_path / "secret.jp2"
    secret.write_bytes((src / "HMI.m2011.01.01_05.00.00.jp2").read_bytes())
    (day / "HMI.m2011.01.01_05.00.00.jp2").symlink_to(secret)
    arch = LocalArchive(root)
    assert len(arch) == 3
    name, observed = arch.closest(pd.Timestamp("2011-01-01T07:10"))
    assert name == "2011/01/01/HMI.m2011.01.01_09.00.00.jp2"
    assert abs(observed - pd.Timestamp("2011-01-01T09:00")) < pd.Timedelta(minutes=1)
    assert arch.closest(pd.Timestamp("2011-01-01T00:00"))[0].endswith("03.00.00.jp2")
    assert arch.path(name) == (root / name).resolve()
    for bad in ("../secret.jp2", "/etc/passwd", "2011/01/01/../../../../secret.jp2", "",
                "2011/01/01/HMI.m2011.01.01_04.00.00.jp2"):  # fmt: skip
        with pytest.raises(InputError):
            arch.path(bad)
    with pytest.raises(InputError, match="leads outside the archive"):
        arch.path("2011/01/01/HMI.m2011.01.01_05.00.00.jp2")
    # a file that arrives later is found by a request after the newest indexed
    (day / "HMI.m2011.01.01_20.00.00.jp2").write_bytes((src / "HMI.m2011.01.01_20.00.00.jp2").read_bytes())  # fmt: skip
    assert arch.closest(pd.Timestamp("2011-01-01T19:00"))[0].endswith("20.00.00.jp2")


# ----------------------------------------------------------------------------- the store


def test_the_store_keeps_every_forecast_and_its_members(world, tmp_path, capsys):  # noqa: F811
    from fdflare.core.recipe import file_sha256
    from fdflare.forecast.store import ForecastStore

    db = tmp_path / "forecasts.sqlite"
    for t in ("2011-01-01T10:00", "2011-01-01T11:00", "2011-01-01 10:00:00Z"):
        code, out, err = cli(archive_argv(world, "--store", str(db), time=t), capsys)
        assert code == 0, err
        assert f"wrote {db}: forecast" in out
    with ForecastStore.open(db, create=False) as store:
        rows = store.forecasts()
        assert [r["requested_time"] for r in rows] == [
            "2011-01-01T10:00:00Z",
            "2011-01-01T10:00:00Z",
            "2011-01-01T11:00:00Z",
        ]
        newest = store.latest()
        assert newest is not None and newest["id"] == 3
        member = newest["members"][0]
        assert member["checkpoint_sha256"] == file_sha256(world["ckpt0"])
        assert member["model"] == "resnet18"
        assert newest["recipe"]["threshold"] == "M1.0" and newest["recipe"]["window"] == "24h"
        assert newest["recipe_assumed"] is True and newest["version"]
        frame = store.frame()
        assert len(frame) == 3 and list(frame["id"]) == ["1", "2", "3"]
    with sqlite3.connect(db) as raw, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("UPDATE forecasts SET probability = 0.99 WHERE id = 1")
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_store_records_failed_cycles_and_refuses_a_second_issue(world, tmp_path, capsys):  # noqa: F811
    from fdflare.forecast.store import AlreadyIssued, ForecastStore

    db = tmp_path / "s.sqlite"
    code, _out, err = cli(archive_argv(world, "--store", str(db), "--json"), capsys)
    assert code == 0, err
    cycle = pd.Timestamp("2011-01-01T10:00")
    with ForecastStore.open(db) as store:
        assert store.cycle_status(cycle) is None
        fid = store.record_failure(cycle=cycle, requested=cycle, issue_time=cycle,
                                   reason="no magnetogram within 12 min", kind="no_data")  # fmt: skip
        assert store.cycle_status(cycle) == "failed"
        assert store.failures()[0]["id"] == fid and "12 min" in store.failures()[0]["reason"]
        first = store.get(1)
        assert first is not None and first["cycle"] is None
    # a forecast object the store can issue for a cycle, once
    with server(world) as hv:
        from fdflare.forecast import service

        members = service.load_members([world["ckpt0"]])
        fc = service.run_forecast(members, requested=cycle, base_urls=[hv.base_url],
                                  tolerance=pd.Timedelta("12min"), accelerator="cpu")  # fmt: skip
    with ForecastStore.open(db) as store:
        store.issue(fc, cycle=cycle)
        assert store.cycle_status(cycle) == "issued"
        with pytest.raises(AlreadyIssued):
            store.issue(fc, cycle=cycle)
        assert len(store.forecasts()) == 2


def test_a_newer_store_or_not_a_store_is_refused_in_one_line(world, tmp_path, capsys):  # noqa: F811
    from fdflare.forecast.store import SCHEMA_VERSION, ForecastStore

    db = tmp_path / "s.sqlite"
    ForecastStore.open(db).close()
    with contextlib.closing(sqlite3.connect(db)) as raw, raw:
        raw.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))  # fmt: skip
    other = tmp_path / "other.sqlite"
    with contextlib.closing(sqlite3.connect(other)) as raw, raw:
        raw.execute("CREATE TABLE t (x)")
    text = tmp_path / "notes.sqlite"
    text.write_text("hello\n")
    for path, words in ((db, "newer fdflare"), (other, "not a forecast store"),
                        (text, "not an SQLite database")):  # fmt: skip
        before = path.read_bytes()
        code, out, err = cli(archive_argv(world, "--store", str(path)), capsys)
        assert code == 2 and out == "" and err.count("\n") == 1 and words in err, err
        assert path.read_bytes() == before


def test_two_forecasts_and_a_reader_at_once_all_succeed(world, tmp_path):  # noqa: F811
    from fdflare.forecast.store import ForecastStore

    db = tmp_path / "shared.sqlite"
    ForecastStore.open(db).close()
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            with ForecastStore.open(db, create=False) as store:
                while not stop.is_set():
                    seen.append(len(store.frame()))
                    store.latest()
                    stop.wait(0.01)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    procs = [
        subprocess_cli(archive_argv(world, "--store", str(db), time=t))
        for t in ("2011-01-01T10:00", "2011-01-01T14:00")
    ]
    results = [p.communicate(timeout=300) for p in procs]
    stop.set()
    thread.join()
    for p, (_out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    assert not errors, errors
    assert seen and max(seen) <= 2
    with ForecastStore.open(db, create=False) as store:
        assert sorted(r["requested_time"] for r in store.forecasts()) == [
            "2011-01-01T10:00:00Z",
            "2011-01-01T14:00:00Z",
        ]


# ----------------------------------------------------------------- history and outputs


def test_a_rerun_appends_and_keeps_the_earlier_row_whatever_the_notation(world, tmp_path, capsys):  # noqa: F811
    hist = tmp_path / "h.csv"
    for t in ("2011-01-01T10:00", "2011-01-01T11:00"):
        code, out, err = cli(archive_argv(world, "--history", str(hist), time=t), capsys)
        assert code == 0, err
    before = hist.read_bytes()
    code, out, err = cli(archive_argv(world, "--history", str(hist), time="2011-01-01 10:00:00Z"), capsys)  # fmt: skip
    assert code == 0, err
    assert "a re-issue: 1 earlier row(s) of this time kept" in out
    after = hist.read_bytes()
    assert after.startswith(before) and after.count(b"\n") == before.count(b"\n") + 1
    df = pd.read_csv(hist, keep_default_na=False)
    assert list(df["requested_time"]) == [
        "2011-01-01T10:00:00Z",
        "2011-01-01T11:00:00Z",
        "2011-01-01T10:00:00Z",
    ]
    assert list(df["threshold"]) == ["M1.0"] * 3 and list(df["window"]) == ["24h"] * 3


def test_a_history_with_trailing_commas_is_refused_and_kept(world, tmp_path, capsys):  # noqa: F811
    hist = tmp_path / "h.csv"
    code, _out, err = cli(archive_argv(world, "--history", str(hist)), capsys)
    assert code == 0, err
    lines = hist.read_text().splitlines()
    hist.write_text("\n".join([lines[0], *(ln + "," for ln in lines[1:])]) + "\n")
    before = hist.read_bytes()
    with FakeHelioviewer("2011-01-01T00:00", "2011-01-02T23:00") as hv:
        argv = forecast_argv(hv.base_url, "--checkpoint", str(world["ckpt0"]), "--history", str(hist))  # fmt: skip
        code, out, err = cli(argv, capsys)
        assert hv.count() == 0  # refused before any request
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"{hist}, line 2" in err and "comma at the end" in err
    assert hist.read_bytes() == before


def test_an_older_history_gets_the_recipe_columns_and_keeps_its_rows(world, tmp_path, capsys):  # noqa: F811
    from fdflare.forecast.formats import HISTORY_COLUMNS, RECIPE_COLUMNS

    old_cols = [c for c in HISTORY_COLUMNS if c not in RECIPE_COLUMNS]
    hist = tmp_path / "old.csv"
    hist.write_text(",".join(old_cols) + "\n" + "2011/01/01/HMI.m2011.01.01_00.00.42.jp2,0.4,,"
                    "2011-01-01T00:00:00Z,2011-01-01T00:01:00Z,2011-01-01T00:00:42Z,"
                    "2011-01-01T00:00:42Z,2011-01-02T00:00:42Z,1000,http://x/v2/,0,0,0.4,a.pt\n")  # fmt: skip
    code, _out, err = cli(archive_argv(world, "--history", str(hist)), capsys)
    assert code == 0, err
    df = pd.read_csv(hist, dtype=str, keep_default_na=False)
    assert list(df.columns) == list(HISTORY_COLUMNS)
    assert df["flare_prob"].iloc[0] == "0.4" and df["threshold"].iloc[0] == ""
    assert df["threshold"].iloc[1] == "M1.0"


def _limited(limit: int):
    """``preexec_fn`` of a child whose files may not grow past ``limit`` bytes."""

    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails with EFBIG

    return apply


@pytest.mark.slow  # several processes, each loading torch: .ci/run runs it
def test_a_full_disk_writes_no_output_names_the_file_and_prints_the_forecast(world, tmp_path):  # noqa: F811
    hist = tmp_path / "h.csv"
    code = main(archive_argv(world, "--history", str(hist), time="2011-01-01T03:00"))
    assert code == 0
    while hist.stat().st_size < 3000:  # a history too large to copy under the limit
        assert main(archive_argv(world, "--history", str(hist), time="2011-01-01T03:00")) == 0
    before = hist.read_bytes()
    sb = tmp_path / "sb"
    proc = subprocess_cli(
        archive_argv(world, "--history", str(hist), "--scoreboard", str(sb), "--json"),
        preexec_fn=_limited(len(before) - 200),
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert err.count("\n") == 1 and str(hist) in err and "cannot write" in err
    assert json.loads(out)["requested_time"] == "2011-01-01T10:00:00Z"  # the forecast is not lost
    assert hist.read_bytes() == before
    assert not sb.exists()  # no scoreboard (nor its folder) without the history
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.csv", "h.csv.lock"]


def test_a_killed_rewrite_leaves_nothing_for_good(world, tmp_path, capsys):  # noqa: F811
    hist = tmp_path / "h.csv"
    stale = tmp_path / ".h.csv.x1y2z3.part"  # what a writer killed mid-write leaves
    stale.write_bytes(b"")
    stale2 = tmp_path / ".h.csv.abc.part.csv"
    stale2.write_bytes(b"timestamp,fl")
    code, _out, err = cli(archive_argv(world, "--history", str(hist)), capsys)
    assert code == 0, err
    assert not stale.exists() and not stale2.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.csv", "h.csv.lock"]
