"""The download stage against a Helioviewer look-alike served on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from PIL import Image

from fdflare import cli
from fdflare.acquire.helioviewer import (
    MANIFEST_COLUMNS,
    download_range,
    is_jpeg2000,
    read_manifest,
    requested_times,
)
from fdflare.acquire.helioviewer.manifest import ManifestStore
from fdflare.core.errors import BusyError, InputError
from fdflare.core.http import HttpPolicy, parse_retry_after
from fdflare.core.paths import image_relpaths, parse_image_times
from fdflare.core.timeparse import parse_duration
from helioviewer_server import CLOSEST, JP2, FakeHelioviewer, Fault, too_many_requests


# Tiny back-offs keep the retry tests fast; timeouts stay generous unless a test stalls.
def fast(**policy: Any) -> dict[str, Any]:
    """download_range's keywords for a test: a quick HTTP policy (``policy`` overrides), no bar."""
    settings = {"retries": 3, "backoff": 0.01, "backoff_max": 0.02, "connect_timeout": 5.0}
    return {"policy": HttpPolicy(**{**settings, "read_timeout": 5.0, **policy}), "progress": False}


DAY = "2011-01-01"


@pytest.fixture
def hv():
    """Start FakeHelioviewer servers on demand; stop them all at the end."""
    servers: list[FakeHelioviewer] = []

    def make(**kwargs) -> FakeHelioviewer:
        server = FakeHelioviewer(**kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def parts_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.name.endswith(".part"))


def jp2_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jp2"))


def assert_files_match_server(out: Path, server: FakeHelioviewer, table: pd.DataFrame) -> None:
    """Every ok row's file holds exactly the bytes the server sent for its image."""
    ok = table[table["status"] == "ok"]
    for path, image_id, nbytes, digest in zip(
        ok["path"], ok["image_id"], ok["bytes"], ok["sha256"], strict=True
    ):
        data = (out / path).read_bytes()
        assert data == server.jp2_bytes(int(image_id))
        assert len(data) == nbytes
        assert hashlib.sha256(data).hexdigest() == digest


# -- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1h", 3600),
        ("12min", 720),
        ("30s", 30),
        ("1h30min", 5400),
        ("1.5h", 5400),
        ("2d", 172800),
        (" 45 s ", 45),
        ("12m", 720),
        ("250ms", 0.25),
        ("1 hour", 3600),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text).total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "12", "1x", "h", "-1h", "1h-", "one hour", "1h 2"])
def test_parse_duration_rejects_with_field(text):
    with pytest.raises(InputError, match=r"field 'tolerance'.*invalid duration"):
        parse_duration(text, name="tolerance")


def test_parse_retry_after_both_forms():
    now = 1_700_000_000.0
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:30 GMT", now=now) == pytest.approx(10.0)
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:00 GMT", now=now) == 0.0  # in the past
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_requested_times_half_open_and_checked():
    # [start, end): start included, end excluded, as in every command
    times = requested_times("2011-01-01T00:00", "2011-01-01T01:00", "12min")
    assert list(times.strftime("%H:%M")) == ["00:00", "00:12", "00:24", "00:36", "00:48"]
    assert list(requested_times(DAY, "2011-01-01T00:30", "12min").strftime("%M")) == [
        "00",
        "12",
        "24",
    ]
    # zone-aware input is converted to UTC
    assert requested_times("2011-01-01T01:00+01:00", "2011-01-01T01:00Z")[0] == pd.Timestamp(DAY)
    with pytest.raises(InputError, match=r"field 'end'.*not after start"):
        requested_times("2011-01-02", "2011-01-01")
    with pytest.raises(InputError, match=r"field 'end'.*not after start"):
        requested_times("2011-01-01", "2011-01-01")
    with pytest.raises(InputError, match=r"field 'start'.*invalid time"):
        requested_times("yesterday-ish", "2011-01-01")
    with pytest.raises(InputError, match=r"field 'cadence'"):
        requested_times("2011-01-01", "2011-01-02", "500ms")


def test_jpeg2000_signatures():
    assert is_jpeg2000(b"\x00\x00\x00\x0cjP  \r\n\x87\n\x00")
    assert is_jpeg2000(b"\xff\x4f\xff\x51\x00")
    assert not is_jpeg2000(b"<!DOCTYPE html>")
    assert not is_jpeg2000(b"")


# -- happy path ------------------------------------------------------------------------


@pytest.mark.parametrize("codestream", [False, True], ids=["jp2", "j2k"])
def test_happy_path_layout_and_manifest(hv, tmp_path, codestream):
    server = hv(codestream=codestream)
    out = tmp_path / "hmi"
    summary = download_range(
        f"{DAY}T00:00", f"{DAY}T04:00", out, base_url=server.base_url, **fast(concurrency=2)
    )
    assert (summary.requested, summary.downloaded, summary.gaps, summary.failed) == (4, 4, 0, 0)
    times = pd.date_range(f"{DAY}T00:00", periods=4, freq="h")
    expected = list(image_relpaths(times, ext="jp2"))
    assert expected[0] == "2011/01/01/HMI.m2011.01.01_00.00.00.jp2"
    assert jp2_files(out) == expected
    assert summary.bytes == sum(len(server.jp2_bytes(server.image_id(t))) for t in times)

    raw = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert tuple(raw.columns) == MANIFEST_COLUMNS
    assert list(raw["requested_time"]) == list(times.strftime("%Y-%m-%dT%H:%M:%S"))
    # named after the requested time; the observation (42 s later) is recorded beside it
    assert list(raw["observation_time"]) == list(
        (times + timedelta(seconds=42)).strftime("%Y-%m-%dT%H:%M:%S")
    )
    assert set(raw["status"]) == {"ok"} and set(raw["source_id"]) == {"19"}

    table = read_manifest(out)
    assert list(table["image_id"]) == [server.image_id(t) for t in times]
    assert_files_match_server(out, server, table)
    assert (out / "manifest.csv.journal").read_text() == ""
    assert parts_under(out) == []
    # one getClosestImage and one getJP2Image per requested time, nothing more
    assert server.count(CLOSEST) == 4 and server.count(JP2) == 4


def test_real_helioviewer_jp2_from_sunpy(hv, tmp_path, sunpy_test_data):
    source = sunpy_test_data / "2023_01_31__03_39_23_200__SDO_HMI_HMI_continuum.jp2"
    server = hv(jp2_file=source)
    out = tmp_path / "hmi"
    summary = download_range(
        f"{DAY}T00:00", f"{DAY}T02:00", out, base_url=server.base_url, **fast()
    )
    assert summary.downloaded == 2
    for rel in jp2_files(out):
        assert (out / rel).read_bytes() == source.read_bytes()
        with Image.open(out / rel) as img:
            img.reduce = 2  # decoded at reduced resolution, as the prepare stage does
            assert img.format == "JPEG2000" and min(img.size) > 0


def test_server_file_name_is_never_used(hv, tmp_path):
    server = hv(disposition="../../escaped.jp2")
    out = tmp_path / "nested" / "hmi"
    download_range(f"{DAY}T00:00", f"{DAY}T02:00", out, base_url=server.base_url, **fast())
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == [
        "nested/hmi/2011/01/01/HMI.m2011.01.01_00.00.00.jp2",
        "nested/hmi/2011/01/01/HMI.m2011.01.01_01.00.00.jp2",
        "nested/hmi/manifest.csv",
        "nested/hmi/manifest.csv.journal",
    ]


def test_base_url_from_environment(hv, tmp_path, monkeypatch):
    server = hv()
    monkeypatch.setenv("FDFLARE_HELIOVIEWER_URL", server.base_url)
    summary = download_range(f"{DAY}T00:00", f"{DAY}T01:00", tmp_path, **fast())
    assert summary.downloaded == 1 and server.count() == 2


# -- gaps ------------------------------------------------------------------------------


def test_gaps_recorded_then_reconsidered_with_a_wider_tolerance(hv, tmp_path):
    # observations every 12 min at :00:42, :12:42, ...; none from 00:50 to 05:10
    server = hv(gaps=[(f"{DAY}T00:50", f"{DAY}T05:10")])
    out = tmp_path / "hmi"
    summary = download_range(
        f"{DAY}T00:00", f"{DAY}T07:00", out, base_url=server.base_url, **fast()
    )
    table = read_manifest(out).set_index("requested_time")
    status = table["status"]
    # 01:00 takes the 00:48:42 image (11 min 18 s away); 05:00 is 12 min 42 s from 05:12:42
    assert list(status.index.strftime("%H")) == ["00", "01", "02", "03", "04", "05", "06"]
    assert list(status) == ["ok", "ok", "gap", "gap", "gap", "gap", "ok"]
    assert summary.gaps == 4 and summary.failed == 0
    assert table.loc[f"{DAY}T01:00", "observation_time"] == pd.Timestamp(f"{DAY}T00:48:42")
    gap = table.loc[f"{DAY}T04:00"]
    assert gap["observation_time"] == pd.Timestamp(f"{DAY}T05:12:42")
    assert gap["reason"] == "closest image is 1:12:42 after the requested time (tolerance 0:12:00)"
    before_gap = table.loc[f"{DAY}T03:00"]
    assert before_gap["observation_time"] == pd.Timestamp(f"{DAY}T00:48:42")
    assert before_gap["reason"].startswith("closest image is 2:11:18 before")
    assert gap["path"] == "" and pd.isna(gap["bytes"])
    assert server.count(JP2) == 3  # nothing fetched for gaps
    assert jp2_files(out) == list(
        image_relpaths(pd.to_datetime([f"{DAY}T00", f"{DAY}T01", f"{DAY}T06"]), ext="jp2")
    )

    # A rerun keeps the known gaps without asking again, unless the tolerance now admits one.
    before = server.count(CLOSEST)
    again = download_range(
        f"{DAY}T00:00", f"{DAY}T07:00", out, base_url=server.base_url, tolerance="15min", **fast()
    )
    assert server.count(CLOSEST) == before + 1  # only 05:00 was asked again
    assert (again.skipped, again.downloaded, again.gaps) == (3, 1, 3)
    assert read_manifest(out).set_index("requested_time").loc[f"{DAY}T05:00", "status"] == "ok"
    # --retry-gaps asks again for every gap
    download_range(
        f"{DAY}T00:00", f"{DAY}T07:00", out, base_url=server.base_url, retry_gaps=True, **fast()
    )
    assert server.count(CLOSEST) == before + 1 + 3


def test_no_images_at_all_is_a_gap(hv, tmp_path):
    server = hv(gaps=[("2000-01-01", "2030-01-01")])
    summary = download_range(
        f"{DAY}T00:00", f"{DAY}T02:00", tmp_path, base_url=server.base_url, **fast()
    )
    assert (summary.gaps, summary.failed) == (2, 0)
    table = read_manifest(tmp_path)
    assert table["reason"].str.contains("No images of the requested type").all()
    assert table["observation_time"].isna().all()


# -- faults ----------------------------------------------------------------------------


class ShortReadTimeoutFor(httpx.BaseTransport):
    """A real HTTP transport that gives the first ``n`` requests for one key a short read timeout.

    Every other request keeps the client's generous timeout, so only the held request (whose
    answer never comes before the test ends) can time out: the stall tests do not depend on
    how fast the machine answers the others.
    """

    def __init__(self, endpoint: str, key, n: int, read: float = 0.2) -> None:
        self.inner = httpx.HTTPTransport()
        self.endpoint = endpoint
        self.key = key
        self.left = n
        self.read = read
        self.lock = threading.Lock()

    def _matches(self, request: httpx.Request) -> bool:
        if not request.url.path.rstrip("/").endswith(self.endpoint):
            return False
        params = request.url.params
        if self.endpoint == CLOSEST:
            return params.get("date") == pd.Timestamp(self.key).strftime("%Y-%m-%dT%H:%M:%SZ")
        return params.get("id") == str(self.key)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            short = self.left > 0 and self._matches(request)
            self.left -= short
        if short:
            timeout = dict(request.extensions.get("timeout", {}))
            timeout["read"] = self.read
            request.extensions = {**request.extensions, "timeout": timeout}
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def held_client(endpoint: str, key, n: int) -> httpx.Client:
    """A client whose first ``n`` requests for ``key`` time out after 0.2 s; others after 30 s."""
    return httpx.Client(
        transport=ShortReadTimeoutFor(endpoint, key, n), timeout=httpx.Timeout(30.0)
    )


@pytest.mark.parametrize(
    "fault",
    [
        Fault("500"),
        Fault("503"),
        too_many_requests(0),
        Fault("truncate"),
        Fault("html"),
        Fault("hold"),
    ],
    ids=["500", "503", "429", "truncated", "html", "stall"],
)
@pytest.mark.parametrize("endpoint", [CLOSEST, JP2])
def test_transient_faults_are_retried(hv, tmp_path, fault, endpoint):
    server = hv()
    target = pd.Timestamp(f"{DAY}T01:00")
    key = target if endpoint == CLOSEST else server.image_id(target)
    server.inject(endpoint, key, fault)
    options: dict = fast()
    if fault.kind == "hold":
        options["client"] = held_client(endpoint, key, 1)
    summary = download_range(
        f"{DAY}T00:00", f"{DAY}T03:00", tmp_path, base_url=server.base_url, **options
    )
    assert (summary.downloaded, summary.failed) == (3, 0)
    assert server.count(endpoint, key) == 2  # the fault, then the retry
    assert_files_match_server(tmp_path, server, read_manifest(tmp_path))
    assert parts_under(tmp_path) == []


def _recording_policy(waits: list[float], **kwargs) -> HttpPolicy:
    """A policy that records each back-off instead of waiting, on a fixed clock."""
    settings = {"retries": 3, "backoff": 0.01, "backoff_max": 0.02, "read_timeout": 5.0}
    return HttpPolicy(**{**settings, **kwargs}, sleep=waits.append, clock=lambda: 1_700_000_000.0)


def test_retry_after_is_honoured_in_both_forms_and_capped(hv, tmp_path):
    server = hv()
    seconds_id = server.image_id(f"{DAY}T00:00")
    date_id = server.image_id(f"{DAY}T01:00")
    huge_id = server.image_id(f"{DAY}T02:00")
    server.inject(JP2, seconds_id, too_many_requests(7))
    # 30 s after the injected clock (1_700_000_000 is 2023-11-14T22:13:20Z)
    server.inject(JP2, date_id, Fault("429", retry_after="Tue, 14 Nov 2023 22:13:50 GMT"))
    server.inject(JP2, huge_id, too_many_requests(86400))
    waits: list[float] = []
    summary = download_range(
        f"{DAY}T00:00",
        f"{DAY}T03:00",
        tmp_path,
        base_url=server.base_url,
        progress=False,
        policy=_recording_policy(waits, concurrency=2, retry_after_max=600.0),
    )
    assert summary.downloaded == 3
    assert sorted(waits) == [7.0, 30.0, 600.0]  # seconds, HTTP-date, capped
    assert server.count(JP2, seconds_id) == server.count(JP2, date_id) == 2


def test_back_off_doubles_with_jitter_up_to_the_cap(hv, tmp_path):
    server = hv()
    bad = server.image_id(f"{DAY}T00:00")
    server.inject(JP2, bad, *[Fault("503")] * 5)
    waits: list[float] = []
    policy = _recording_policy(waits, retries=4, backoff=1.0, backoff_max=3.0)
    summary = download_range(
        f"{DAY}T00:00", f"{DAY}T01:00", tmp_path, base_url=server.base_url, progress=False,
        policy=policy,
    )  # fmt: skip
    assert summary.failed == 1 and "gave up after 5 attempt(s)" in summary.failures[0][1]
    assert len(waits) == 4
    for wait, cap in zip(waits, [1.0, 2.0, 3.0, 3.0], strict=True):
        assert cap / 2 <= wait <= cap


def test_policy_bounds_requests_in_flight():
    policy = HttpPolicy(concurrency=2)
    entered = [threading.Event() for _ in range(2)]
    leave = threading.Event()

    def hold(i: int) -> None:
        with policy.slot():
            entered[i].set()
            leave.wait(30)

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for e in entered:
        assert e.wait(30)
    assert not policy._slots.acquire(blocking=False)  # a third request must wait
    leave.set()
    for t in threads:
        t.join(30)
    assert policy._slots.acquire(blocking=False)


@pytest.mark.parametrize(
    ("faults", "retries", "reason", "attempts"),
    [
        (
            [Fault("500")] * 3,
            2,
            r"getJP2Image id=\d+: HTTP 500 Internal Server Error \(gave up after 3",
            3,
        ),
        ([Fault("truncate")] * 3, 2, r"incomplete body", 3),
        (
            [Fault("html")] * 3,
            2,
            r"answered text/html.*'<!DOCTYPE html>.*not a JPEG 2000 file \(gave up after 3",
            3,
        ),
        ([Fault("hold")] * 2, 1, r"timed out \(ReadTimeout\) \(gave up after 2", 2),
    ],
    ids=["500", "truncated", "html", "stall"],
)
def test_persistent_faults_are_failures_with_reasons(
    hv, tmp_path, faults, retries, reason, attempts
):
    server = hv()
    bad = pd.Timestamp(f"{DAY}T01:00")
    server.inject(JP2, server.image_id(bad), *faults)
    options: dict = fast(retries=retries)
    if faults[0].kind == "hold":
        options["client"] = held_client(JP2, server.image_id(bad), len(faults))
    summary = download_range(
        f"{DAY}T00:00", f"{DAY}T03:00", tmp_path, base_url=server.base_url, **options
    )
    assert (summary.downloaded, summary.failed) == (2, 1)
    assert summary.failures[0][0] == "2011-01-01T01:00:00"
    assert server.count(JP2, server.image_id(bad)) == attempts
    row = read_manifest(tmp_path).set_index("requested_time").loc[bad]
    assert row["status"] == "failed" and row["path"] == ""
    assert pd.Series([row["reason"]]).str.contains(reason).all(), row["reason"]
    assert not (tmp_path / image_relpaths([bad], ext="jp2")[0]).exists()
    assert parts_under(tmp_path) == []
    assert "failed 2011-01-01T01:00:00" in summary.format()

    # the rerun tries the failed item again (and only that one)
    before = server.count(JP2)
    again = download_range(
        f"{DAY}T00:00", f"{DAY}T03:00", tmp_path, base_url=server.base_url, **options
    )
    assert (again.downloaded, again.skipped, again.failed) == (1, 2, 0)
    assert server.count(JP2) == before + 1


def test_closest_image_answers_that_are_not_usable(hv, tmp_path):
    server = hv()
    server.inject(CLOSEST, f"{DAY}T00:00", Fault("html"))  # once: retried, mended
    server.inject(CLOSEST, f"{DAY}T01:00", *[Fault("html")] * 4)  # every attempt
    summary = download_range(
        f"{DAY}T00:00", f"{DAY}T02:00", tmp_path, base_url=server.base_url, **fast()
    )
    assert (summary.downloaded, summary.failed) == (1, 1)
    assert server.count(CLOSEST, f"{DAY}T00:00") == 2
    assert server.count(CLOSEST, f"{DAY}T01:00") == 4
    reason = summary.failures[0][1]
    assert "getClosestImage answered text/html; charset=utf-8, not JSON" in reason
    assert "gave up after 4 attempt(s)" in reason


def test_concurrency_bound_is_used_in_full_and_kept(hv, tmp_path):
    # The first three requests wait at a barrier until all three are in flight together:
    # the server proves the overlap instead of hoping the scheduler makes it.
    server = hv(rendezvous=3)
    summary = download_range(
        f"{DAY}T00:00", f"{DAY}T12:00", tmp_path, base_url=server.base_url, **fast(concurrency=3)
    )
    assert server.rendezvous_met.is_set()
    assert summary.downloaded == 12
    assert server.max_in_flight == 3  # used in full, never exceeded


# -- resuming --------------------------------------------------------------------------


def test_rerun_skips_complete_files_and_refetches_damaged_ones(hv, tmp_path):
    server = hv()
    args = (f"{DAY}T00:00", f"{DAY}T05:00", tmp_path)
    download_range(*args, base_url=server.base_url, **fast())
    assert server.count() == 10

    again = download_range(*args, base_url=server.base_url, **fast())
    assert (again.skipped, again.downloaded) == (5, 0)
    assert server.count() == 10  # not one request

    table = read_manifest(tmp_path).set_index("requested_time")
    corrupt = tmp_path / table.loc[f"{DAY}T01:00", "path"]
    data = bytearray(corrupt.read_bytes())
    data[-10] ^= 0xFF  # same size, different bytes
    corrupt.write_bytes(bytes(data))
    (tmp_path / table.loc[f"{DAY}T03:00", "path"]).unlink()

    third = download_range(*args, base_url=server.base_url, **fast())
    assert (third.skipped, third.downloaded) == (3, 2)
    assert server.count() == 14
    assert server.count(JP2, server.image_id(f"{DAY}T01:00")) == 2
    table = read_manifest(tmp_path)
    assert_files_match_server(tmp_path, server, table)
    reasons = table.set_index("requested_time")["reason"]
    assert reasons[f"{DAY}T01:00"] == "re-fetched: SHA-256 differs from the manifest"
    assert reasons[f"{DAY}T03:00"] == "re-fetched: file missing"

    # a size check alone notices a truncated file
    (tmp_path / table["path"].iloc[0]).write_bytes(b"\x00\x00\x00\x0cjP  \r\n\x87\n")
    fourth = download_range(*args, base_url=server.base_url, verify="size", **fast())
    assert (fourth.skipped, fourth.downloaded) == (4, 1)


def _journal_lines(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [line for line in text.split("\n")[:-1] if line]


def _start_cli(server: FakeHelioviewer, out: Path, end: str) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "fdflare", "download", "--start", f"{DAY}T00:00", "--end", end,
        "--out", str(out), "--base-url", server.base_url, "--concurrency", "2",
        "--backoff", "0.01", "--quiet",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def test_killed_run_loses_nothing_and_the_rerun_finishes(hv, tmp_path, capsys):
    # Two image bodies are served whole; every later one stops half-way until the gate opens,
    # so the kill always finds finished items and partial files, whatever the machine's pace.
    server = hv(hold_bodies_after=2)
    out = tmp_path / "hmi"
    end = f"{DAY}T10:00"
    journal = out / "manifest.csv.journal"
    proc = _start_cli(server, out, end)
    try:
        _wait_for(lambda: len(_journal_lines(journal)) >= 2)
        _wait_for(lambda: any(p.stat().st_size > 0 for p in parts_under(out)))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    # Killed mid-download: partial data lies only under temporary names.
    stale = parts_under(out)
    assert stale
    for rel in jp2_files(out):
        when = parse_image_times([rel])[0][0]
        assert (out / rel).read_bytes() == server.jp2_bytes(server.image_id(when)), rel
    done_before = [json.loads(line) for line in _journal_lines(journal)]
    assert done_before and all(r["status"] == "ok" for r in done_before)

    server.gate.set()
    status = cli.main([
        "download", "--start", f"{DAY}T00:00", "--end", end, "--out", str(out),
        "--base-url", server.base_url, "--backoff", "0.01", "--quiet",
    ])  # fmt: skip
    assert status == 0
    assert f"removed {len(stale)} partial file(s)" in capsys.readouterr().out
    assert parts_under(out) == []
    table = read_manifest(out)
    assert len(table) == 10 and set(table["status"]) == {"ok"}
    assert_files_match_server(out, server, table)
    assert journal.read_text() == ""
    for record in done_before:  # what the killed run finished was not fetched again
        assert server.count(JP2, int(record["image_id"])) == 1


def test_sigterm_stops_at_a_safe_point_and_keeps_what_was_done(hv, tmp_path):
    # One image body is served whole, later ones wait half-way until the gate opens: the
    # signal always arrives with one item done and the others in flight.
    server = hv(hold_bodies_after=1)
    out = tmp_path / "hmi"
    journal = out / "manifest.csv.journal"
    proc = _start_cli(server, out, f"{DAY}T10:00")
    first = b""
    try:
        _wait_for(lambda: len(_journal_lines(journal)) >= 1)
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        first = proc.stderr.readline()  # the run has seen the signal
    finally:
        server.gate.set()
        if proc.poll() is None and not first:
            proc.kill()
        stdout, stderr = proc.communicate(timeout=30)
    stderr = first + stderr
    assert proc.returncode == 130, stderr
    assert b"SIGTERM: stopping after the downloads in flight" in stderr
    assert b"interrupted: rerun the same command to finish" in stdout
    assert journal.read_text() == ""  # folded into the manifest on the way out
    table = read_manifest(out)
    assert 1 <= len(table) <= 3 and set(table["status"]) == {"ok"}  # 1 done, 2 in flight
    assert jp2_files(out) == sorted(table["path"])  # every file on disk is recorded
    assert parts_under(out) == []


def test_cancel_before_start_does_nothing(hv, tmp_path):
    server = hv()
    cancel = threading.Event()
    cancel.set()
    summary = download_range(
        f"{DAY}T00:00", f"{DAY}T04:00", tmp_path, base_url=server.base_url, cancel=cancel, **fast()
    )
    assert summary.interrupted and summary.downloaded == 0
    assert server.count() == 0 and jp2_files(tmp_path) == []


def test_torn_journal_line_is_left_out_and_refetched(hv, tmp_path):
    server = hv()
    download_range(f"{DAY}T00:00", f"{DAY}T02:00", tmp_path, base_url=server.base_url, **fast())
    journal = tmp_path / "manifest.csv.journal"
    gap = {c: "" for c in MANIFEST_COLUMNS} | {
        "requested_time": f"{DAY}T02:00:00",
        "source_id": "19",
        "status": "gap",
        "reason": "hand-made",
    }
    journal.write_text(json.dumps(gap) + "\n" + '{"requested_time": "2011-01-01T03:00:00", "sta')
    summary = download_range(
        f"{DAY}T00:00", f"{DAY}T04:00", tmp_path, base_url=server.base_url, **fast()
    )
    assert summary.torn_journal_lines == 1
    assert (summary.skipped, summary.gaps, summary.downloaded) == (2, 1, 1)
    assert "1 unfinished journal line(s)" in summary.format()
    assert (
        read_manifest(tmp_path).set_index("requested_time").loc[f"{DAY}T02:00", "reason"]
        == "hand-made"
    )


# -- bad input -------------------------------------------------------------------------


def test_malformed_manifest_names_file_line_and_field(hv, tmp_path):
    server = hv()
    download_range(f"{DAY}T00:00", f"{DAY}T03:00", tmp_path, base_url=server.base_url, **fast())
    manifest = tmp_path / "manifest.csv"
    lines = manifest.read_text().splitlines()
    lines[2] = lines[2].replace(",ok,", ",done,")
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as info:
        download_range(f"{DAY}T00:00", f"{DAY}T03:00", tmp_path, base_url=server.base_url, **fast())
    assert (info.value.path, info.value.line, info.value.field) == (str(manifest), 3, "status")
    assert "'done'" in str(info.value)


def test_a_manifest_whose_rows_end_in_a_comma_is_refused_and_kept(hv, tmp_path):
    server = hv()
    download_range(f"{DAY}T00:00", f"{DAY}T02:00", tmp_path, base_url=server.base_url, **fast())
    manifest = tmp_path / "manifest.csv"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([lines[0], *(ln + "," for ln in lines[1:])]) + "\n")
    before = manifest.read_bytes()
    with pytest.raises(InputError) as info:
        download_range(f"{DAY}T00:00", f"{DAY}T02:00", tmp_path, base_url=server.base_url, **fast())
    assert (info.value.path, info.value.line) == (str(manifest), 2)
    assert "trailing comma" in str(info.value) and manifest.read_bytes() == before


def test_manifest_of_another_source_is_refused(hv, tmp_path):
    server = hv()
    download_range(f"{DAY}T00:00", f"{DAY}T01:00", tmp_path, base_url=server.base_url, **fast())
    with pytest.raises(InputError, match="holds images of source 19, not 20"):
        download_range(
            f"{DAY}T00:00",
            f"{DAY}T01:00",
            tmp_path,
            base_url=server.base_url,
            source_id=20,
            **fast(),
        )


def test_a_manifest_in_use_is_refused(hv, tmp_path):
    server = hv()
    with ManifestStore(tmp_path / "manifest.csv"):
        with pytest.raises(BusyError, match="another download is using"):
            download_range(
                f"{DAY}T00:00", f"{DAY}T01:00", tmp_path, base_url=server.base_url, **fast()
            )
    assert server.count() == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "concurrency must be an integer >= 1"),
        ({"retries": -1}, "retries must be an integer >= 0"),
        ({"read_timeout": 0}, "read_timeout must be positive"),
        ({"base_url": "ftp://example.org/v2/"}, "invalid base URL"),
        ({"tolerance": "soon"}, "field 'tolerance': invalid duration 'soon'"),
    ],
)
def test_bad_arguments(tmp_path, options, message):
    policy = {k: options.pop(k) for k in ("concurrency", "retries", "read_timeout") if k in options}
    with pytest.raises(InputError, match=message):
        args = {**fast(**policy), "base_url": "http://127.0.0.1:9/v2/", **options}
        download_range(f"{DAY}T00:00", f"{DAY}T02:00", tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


# -- the CLI ---------------------------------------------------------------------------


def test_cli_download_and_exit_status(hv, tmp_path, capsys):
    server = hv()
    base = ["download", "--start", f"{DAY}T00:00", "--end", f"{DAY}T03:00", "--out", str(tmp_path),
            "--base-url", server.base_url, "--quiet", "--backoff", "0.01", "--retries", "1"]  # fmt: skip
    server.inject(JP2, server.image_id(f"{DAY}T02:00"), Fault("html"), Fault("html"))
    assert cli.main(base) == 1  # one item failed (an HTML page on both attempts)
    out = capsys.readouterr().out
    assert "3 requested: 2 downloaded" in out and "1 failed" in out and "not a JPEG 2000" in out
    assert cli.main(base) == 0  # the rerun mends it
    assert "3 requested: 1 downloaded" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--start", "2011-01-02", "--end", "2011-01-01"],
            "--end 2011-01-01 is not after --start 2011-01-02",
        ),
        (
            ["--start", "2011-01-01", "--end", "2011-01-02", "--cadence", "1x"],
            "--cadence: invalid duration '1x'",
        ),
        (
            ["--start", "2011-01-01", "--end", "2011-01-02", "--tolerance", "12"],
            "--tolerance: invalid duration '12'",
        ),
        (
            ["--start", "2011-13-01", "--end", "2011-01-02"],
            "--start: invalid time '2011-13-01'",
        ),
        (["--start", "garbage", "--end", "2011-01-02"], "--start: invalid time 'garbage'"),
        (["--start", "2011-01-01", "--end", "garbage"], "--end: invalid time 'garbage'"),
        (["--start", "2011-01-01", "--end", "2011-01-01"], "--end 2011-01-01 is not after"),
        (["--start", "2011-01-01", "--end", "2011-01-02", "--concurrency", "0"], "--concurrency"),
        (["--start", "2011-01-01", "--end", "2011-01-02", "--retries", "-1"], "--retries"),
        (["--start", "2011-01-01", "--end", "2011-01-02", "--read-timeout", "0"], "--read-timeout"),
    ],
)
def test_cli_bad_arguments_exit_2(tmp_path, capsys, extra, message):
    try:
        base = ["download", "--out", str(tmp_path / "out"), "--base-url", "http://127.0.0.1:9/v2/"]
        status = cli.main([*base, *extra])
    except SystemExit as exc:  # argparse's own checks (types) exit from the parser
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("fdflare download: error: ") and message in err
    assert not (tmp_path / "out").exists()


def _cli(capsys, server_url: str, out: Path, start: str, end: str, *extra: str):
    status = cli.main([
        "download", "--start", start, "--end", end, "--out", str(out), "--base-url", server_url,
        "--backoff", "0.01", "--retries", "1", "--quiet", *extra,
    ])  # fmt: skip
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_end_is_excluded(hv, tmp_path, capsys):
    server = hv()
    status, out, err = _cli(capsys, server.base_url, tmp_path, f"{DAY}T00:00", f"{DAY}T03:00")
    assert status == 0, err
    assert out.startswith("3 requested: 3 downloaded")
    assert list(read_manifest(tmp_path)["requested_time"].dt.strftime("%H")) == ["00", "01", "02"]
    assert server.count(CLOSEST, f"{DAY}T03:00") == 0  # --end itself is not asked for


def test_cli_json_is_the_summary_as_one_object(hv, tmp_path, capsys):
    server = hv(gaps=[(f"{DAY}T00:40", f"{DAY}T01:20")])
    status, out, err = _cli(
        capsys, server.base_url, tmp_path, f"{DAY}T00:00", f"{DAY}T03:00", "--json"
    )
    assert status == 0, err
    result = json.loads(out)  # one object, nothing else on stdout
    assert result["out"] == str(tmp_path) and result["manifest"] == str(tmp_path / "manifest.csv")
    assert (result["requested"], result["downloaded"], result["gaps"]) == (3, 2, 1)
    assert result["ok"] == 2 and result["failed"] == 0 and result["failures"] == []
    assert result["interrupted"] is False and result["bytes"] > 0


def test_cli_quiet_keeps_the_summary_and_drops_the_progress(hv, tmp_path, capsys):
    server = hv()
    status, out, err = _cli(capsys, server.base_url, tmp_path, f"{DAY}T00:00", f"{DAY}T02:00")
    assert status == 0 and err == ""
    assert "2 requested: 2 downloaded" in out and "manifest:" in out


def test_cli_retry_gaps_asks_again_about_recorded_gaps(hv, tmp_path, capsys):
    # The archive first has nothing from 00:40 to 02:20, then fills the gap late.
    early = hv(gaps=[(f"{DAY}T00:40", f"{DAY}T02:20")])
    status, out, _ = _cli(capsys, early.base_url, tmp_path, f"{DAY}T00:00", f"{DAY}T04:00")
    assert status == 0 and "2 gap(s)" in out
    late = hv()
    status, out, _ = _cli(capsys, late.base_url, tmp_path, f"{DAY}T00:00", f"{DAY}T04:00")
    assert status == 0 and late.count() == 0  # a plain rerun keeps the gaps, asks nothing
    assert "2 gap(s)" in out
    status, out, _ = _cli(
        capsys, late.base_url, tmp_path, f"{DAY}T00:00", f"{DAY}T04:00", "--retry-gaps"
    )
    assert status == 0, out
    assert out.startswith("4 requested: 2 downloaded") and "0 gap(s)" in out
    assert late.count(CLOSEST) == 2  # only the two gaps were asked again
    table = read_manifest(tmp_path)
    assert set(table["status"]) == {"ok"}
    assert_files_match_server(tmp_path, late, table.iloc[1:3])


def test_cli_manifest_in_use_is_busy_exit_2(hv, tmp_path, capsys):
    server = hv()
    with ManifestStore(tmp_path / "manifest.csv"):
        status, out, err = _cli(capsys, server.base_url, tmp_path, f"{DAY}T00:00", f"{DAY}T01:00")
    assert status == 2 and out == ""
    assert err.startswith("fdflare download: error: another download is using")
    assert len(err.splitlines()) == 1 and server.count() == 0


def test_cli_read_only_out_is_refused_up_front(hv, read_only_dir, capsys):
    server = hv()
    status, out, err = _cli(capsys, server.base_url, read_only_dir, f"{DAY}T00:00", f"{DAY}T01:00")
    assert status == 2 and out == ""
    assert err == f"fdflare download: error: --out {read_only_dir} is not writable\n"
    assert server.count() == 0


def test_cli_out_is_a_file_is_refused(hv, tmp_path, capsys):
    server = hv()
    target = tmp_path / "catalog.csv"
    target.write_text("keep me\n")
    status, _, err = _cli(capsys, server.base_url, target, f"{DAY}T00:00", f"{DAY}T01:00")
    assert status == 2 and "--out" in err and "is a file" in err
    assert target.read_text() == "keep me\n" and server.count() == 0


def test_cli_service_unreachable_exits_3_and_records_nothing(tmp_path, capsys):
    import socket

    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out_dir = tmp_path / "hmi"
    status, out, err = _cli(
        capsys, f"http://127.0.0.1:{port}/v2/", out_dir, f"{DAY}T00:00", f"{DAY}T12:00",
        "--concurrency", "1",
    )  # fmt: skip
    assert status == 3, err
    assert err.startswith("fdflare download: error: the service cannot be reached")
    assert "cannot connect" in err and len(err.splitlines()) == 1
    assert "12 requested: 0 downloaded" in out  # the summary still prints
    assert len(read_manifest(out_dir)) == 0  # nothing recorded: a rerun asks for every time


def test_cli_some_hours_failed_exit_1_and_listed(hv, tmp_path, capsys):
    server = hv()
    bad = server.image_id(f"{DAY}T01:00")
    server.inject(JP2, bad, Fault("500"), Fault("500"))
    status, out, _ = _cli(capsys, server.base_url, tmp_path, f"{DAY}T00:00", f"{DAY}T03:00")
    assert status == 1
    assert "1 failed" in out and "failed 2011-01-01T01:00:00: getJP2Image" in out
