"""``fdflare catalog``: NOAA reports, HEK through a loopback server, reference catalogs."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from fdflare.acquire.catalog import read_catalog
from fdflare.acquire.hek import (
    HEKFlareClient,
    fetch_hek_catalog,
    hpc_to_hgs,
    month_intervals,
    records_to_catalog,
    resolve_hek_url,
)
from fdflare.acquire.noaa import is_noaa_report, read_noaa_report
from fdflare.cli import main
from fdflare.core.errors import DownloadError, InputError
from hek_server import FakeHEK, expected_rows

# Records in the documented goes-xrs-report layout (class letter in column 60, intensity
# in tenths in 61-63, location in 29-34): real GOES-15 flares of 2011, a 1989 record with
# optical importance "3B" and a three-digit intensity, the N00E00 placeholder, a record
# without location, an optical-only report without X-ray class, and a repeated line.
NOAA_LINES = [
    "31777110115  1149 1221 1212                                C 23    G15  3.5E-03 11131",
    "31777110215  0144 0206 0156 S20W12SXI                      X 22    G15  1.6E-01 11158 110218.1",
    "31777110309  0101 0110 0105 N00E00                         B 45    G15  1.0E-04",
    "31777110309  2313 2329 2323 N08W11                         X 15    G15  6.7E-02 11166",
    "31777890306  1354 1700 1505 N35E693B                       X150    G07",
    "31777110215  0144 0206 0156 S20W12SXI                      X 22    G15  1.6E-01 11158 110218.1",
    "31777960712  0812 0820 0815 S12W21SF",
]
# The same kind of record as it appears re-padded, with the location moved to the end.
NOAA_ALT_LINE = "31777110115  1149 1221 1212 C    23    G15  3.5E-03 11131 S25W33"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["catalog", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def noaa_file(tmp_path: Path) -> Path:
    path = tmp_path / "goes-xrs-report_2011.txt"
    path.write_text("\n".join(NOAA_LINES) + "\n")
    return path


# -- NOAA GOES XRS reports ----------------------------------------------------------------


def test_noaa_sample_is_in_the_documented_columns() -> None:
    # Guard the fixture itself: 1-based column 60 is the class letter, 29-34 the location.
    for line in NOAA_LINES[:-1]:
        assert line[59] in "ABCMX"
        assert line[28:34].strip() == "" or line[28] in "NS"


def test_noaa_report_parses_documented_layout(noaa_file: Path) -> None:
    cat = read_noaa_report(noaa_file)
    got = {
        (t.strftime("%Y-%m-%d %H:%M"), c): (lon, lat)
        for t, c, lon, lat in zip(
            cat["start_time"], cat["goes_class"], cat["fl_lon"], cat["fl_lat"], strict=True
        )
    }
    assert list(got) == [
        ("1989-03-06 13:54", "X15.0"),
        ("2011-01-15 11:49", "C2.3"),
        ("2011-02-15 01:44", "X2.2"),
        ("2011-03-09 01:01", "B4.5"),
        ("2011-03-09 23:13", "X1.5"),
    ]
    assert got[("2011-02-15 01:44", "X2.2")] == (12.0, -20.0)  # S20W12: south -, west +
    assert got[("1989-03-06 13:54", "X15.0")] == (-69.0, 35.0)  # N35E69: east -
    assert got[("2011-03-09 23:13", "X1.5")] == (11.0, 8.0)
    for key in [("2011-01-15 11:49", "C2.3"), ("2011-03-09 01:01", "B4.5")]:
        assert all(math.isnan(v) for v in got[key])  # blank, and the N00E00 placeholder
    np.testing.assert_allclose(cat["flux"], [1.5e-3, 2.3e-6, 2.2e-4, 4.5e-7, 1.5e-4])
    assert cat["start_time"].dtype == "datetime64[ns]"
    assert cat.attrs["duplicates"] == 1
    assert cat.attrs["unclassified"] == 1
    assert cat.attrs["placeholder_locations"] == 1
    assert cat.attrs["alternative_layout"] == 0


def test_noaa_report_alternative_layout(tmp_path: Path) -> None:
    path = tmp_path / "alt.txt"
    path.write_text(NOAA_LINES[3] + "\n" + NOAA_ALT_LINE + "\n")
    cat = read_noaa_report(path)
    assert list(cat["goes_class"]) == ["C2.3", "X1.5"]
    assert (cat.loc[0, "fl_lon"], cat.loc[0, "fl_lat"]) == (33.0, -25.0)
    assert cat.attrs["alternative_layout"] == 1


@pytest.mark.parametrize(
    ("bad", "line", "field", "words"),
    [
        (
            "31777111315  1149 1221 1212                                C 23",
            2,
            "start_time",
            "date",
        ),
        (
            "31777110115  2561 1221 1212                                C 23",
            2,
            "start_time",
            "time",
        ),
        (
            "31777110115  1149 1221 1212 S20W12                         Q 23",
            2,
            "goes_class",
            "class",
        ),
        ("Data code 31, station 777", 2, None, "not a GOES XRS report record"),
    ],
)
def test_noaa_malformed_line_names_file_and_line(
    tmp_path: Path, bad: str, line: int, field: str | None, words: str
) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(NOAA_LINES[0] + "\n" + bad + "\n" + NOAA_LINES[3] + "\n")
    with pytest.raises(InputError) as info:
        read_noaa_report(path)
    err = info.value
    assert err.path == str(path)
    assert err.line == line
    assert err.field == field
    assert words in err.message


def test_read_catalog_detects_noaa_reports(noaa_file: Path, tmp_path: Path) -> None:
    assert is_noaa_report(noaa_file)
    cat = read_catalog(noaa_file)
    assert cat.attrs["format"] == "noaa"
    assert len(cat) == 5
    csv = tmp_path / "study.csv"
    csv.write_text("start_time,goes_class,fl_lon,fl_lat\n2011-02-15 01:44:00,X2.2,12,-20\n")
    assert not is_noaa_report(csv)
    assert read_catalog(csv).attrs["format"] == "study"
    with pytest.raises(InputError, match="not a GOES XRS report record"):
        read_catalog(csv, fmt="noaa")


# -- coordinates --------------------------------------------------------------------------


def test_hpc_to_hgs_known_values() -> None:
    from astropy.time import Time
    from sunpy.coordinates import sun

    t = "2011-02-15T01:44:00"
    b0 = sun.B0(Time(t)).deg
    radius = sun.angular_radius(Time(t)).arcsec
    lon, lat = hpc_to_hgs(
        [0.0, -0.9999 * radius, 0.9999 * radius, 2 * radius],
        [0.0, 0.0, 0.0, 0.0],
        pd.to_datetime([t] * 4),
    )
    # Disk centre: on the central meridian, at the latitude B0 of the disk centre.
    assert abs(lon[0]) < 1e-6
    assert lat[0] == pytest.approx(b0, abs=1e-6)
    assert b0 == pytest.approx(-6.82, abs=0.01)  # mid-February: the south pole is tipped to us
    # Limbs: about 90 degrees from the central meridian (east negative, west positive).
    assert -90 <= lon[1] <= -86
    assert 86 <= lon[2] <= 90
    # Off the disk: no Stonyhurst position.
    assert np.isnan(lon[3]) and np.isnan(lat[3])


def test_hpc_to_hgs_inverts_sunpy_forward_transform() -> None:
    # Positions of FLARES were turned into hpc by sunpy in hek_server; converting them
    # back must give the Stonyhurst positions again.
    from hek_server import make_records

    recs = [r for r in make_records() if r["hgs_x"] not in (None, 0.0) and r["hpc_x"]]
    lon, lat = hpc_to_hgs(
        [r["hpc_x"] for r in recs],
        [r["hpc_y"] for r in recs],
        pd.to_datetime([r["event_starttime"] for r in recs]),
    )
    np.testing.assert_allclose(lon, [r["hgs_x"] for r in recs], atol=1e-6)
    np.testing.assert_allclose(lat, [r["hgs_y"] for r in recs], atol=1e-6)


def test_records_to_catalog_counts_what_it_leaves_out() -> None:
    raw = pd.DataFrame(
        {
            "event_starttime": [
                "2011-02-15T01:44:00",
                "",
                "2011-02-16T00:00:00",
                "2011-02-17T00:00:00",
            ],
            "fl_goescls": ["X2.2", "M1.0", "", "Q5"],
            "hgs_x": [12.0, None, None, None],
            "hgs_y": [-20.0, None, None, None],
        }
    )
    cat = records_to_catalog(raw)
    assert list(cat["goes_class"]) == ["X2.2"]
    c = cat.attrs["counts"]
    assert (c["records"], c["bad_time"], c["unclassified"], c["bad_class"]) == (4, 1, 1, 1)


def test_month_intervals_cover_the_range_exactly() -> None:
    months = month_intervals(pd.Timestamp("2010-12-20 06:00"), pd.Timestamp("2011-03-02"))
    assert months[0] == (pd.Timestamp("2010-12-20 06:00"), pd.Timestamp("2011-01-01"))
    assert months[-1] == (pd.Timestamp("2011-03-01"), pd.Timestamp("2011-03-02"))
    assert all(a[1] == b[0] for a, b in itertools.pairwise(months))
    assert len(months) == 4


# -- HEK through a loopback server -------------------------------------------------------


def fast_client(**kw: object) -> HEKFlareClient:
    return HEKFlareClient(backoff=0.01, timeout=5.0, **kw)  # type: ignore[arg-type]


def test_fetch_hek_pages_retries_and_converts() -> None:
    with FakeHEK(fail={"2011-03": [500]}) as hek:
        cat = fetch_hek_catalog(
            "2011-01-01",
            "2011-04-01",
            min_class="C1.0",
            url=hek.url,
            client=fast_client(page_size=2),
            progress=False,
        )
    rows = [
        (t.strftime("%Y-%m-%d %H:%M:%S"), c)
        for t, c in zip(cat["start_time"], cat["goes_class"], strict=True)
    ]
    assert rows == expected_rows(min_flux=1e-6)
    months = hek.months_requested()
    assert months.count("2011-03") == 2  # one 500, one success
    # Paging: January has 4 C+ SWPC records overlapping it (page size 2 -> 2 pages).
    jan_pages = [q["page"] for q in hek.requests if q["event_starttime"].startswith("2011-01")]
    assert jan_pages == ["1", "2"]
    q = hek.requests[0]
    assert (q["param0"], q["op0"], q["value0"]) == ("FRM_NAME", "=", "SWPC")
    assert (q["param1"], q["op1"], q["value1"]) == ("FL_GOESCLS", ">=", "C")
    by_class = cat.set_index("goes_class")
    assert (by_class.loc["X2.2", "fl_lon"], by_class.loc["X2.2", "fl_lat"]) == pytest.approx(
        (12.0, -20.0), abs=1e-6
    )
    assert (by_class.loc["M1.0", "fl_lon"], by_class.loc["M1.0", "fl_lat"]) == (
        0.0,
        19.0,
    )  # hpc_x == 0 is real
    for unknown in ["C1.2", "C4.8", "M1.4"]:  # placeholder, off the disk, no position
        assert np.isnan(by_class.loc[unknown, "fl_lon"])
    c = cat.attrs["counts"]
    assert c["duplicates"] == 1  # 2011-01-31 23:52 .. 02-01 00:25 is in January and February
    assert c["outside_range"] == 1  # 2010-12-31 23:40 .. 2011-01-01 00:05 overlaps January
    assert (c["off_disk"], c["placeholder_locations"], c["location_hpc"]) == (1, 1, 1)
    assert c["unknown_location"] == 3


def test_fetch_hek_without_min_class_keeps_b_flares_and_counts_unclassified() -> None:
    with FakeHEK() as hek:
        cat = fetch_hek_catalog(
            "2011-01-01", "2011-04-01", url=hek.url, client=fast_client(), progress=False
        )
    assert "param1" not in hek.requests[0]
    assert "B5.6" in set(cat["goes_class"])
    assert cat.attrs["counts"]["unclassified"] == 1
    assert len(cat) == len(expected_rows())


class _FirstRequestTimesOut(httpx.BaseTransport):
    """A real HTTP transport that gives only the first request a 0.2 s read timeout."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.first = True

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.first:
            self.first = False
            timeout = {**request.extensions.get("timeout", {}), "read": 0.2}
            request.extensions = {**request.extensions, "timeout": timeout}
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_fetch_hek_timeout_is_retried() -> None:
    # The first answer is held until the server stops, so its 0.2 s read timeout always
    # fires; the retry runs under a 30 s timeout and is answered at once.
    with (
        FakeHEK(fail={"2011-02": ["hold"]}) as hek,
        httpx.Client(transport=_FirstRequestTimesOut(), timeout=30.0) as http,
    ):
        cat = fetch_hek_catalog(
            "2011-02-01",
            "2011-03-01",
            url=hek.url,
            client=HEKFlareClient(backoff=0.01),
            progress=False,
            http_client=http,
        )
    assert hek.months_requested() == ["2011-02", "2011-02"]
    assert "X2.2" in set(cat["goes_class"])


def test_fetch_hek_garbage_reply_is_retried_and_4xx_is_not() -> None:
    with FakeHEK(fail={"2011-02": ["garbage"], "2011-03": [400]}) as hek:
        with pytest.raises(DownloadError) as info:
            fetch_hek_catalog(
                "2011-02-01", "2011-04-01", url=hek.url, client=fast_client(), progress=False
            )
    assert hek.months_requested() == ["2011-02", "2011-02", "2011-03"]
    assert "2011-03" in str(info.value) and "HTTP 400" in str(info.value)


def test_resolve_hek_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FDFLARE_HEK_URL", raising=False)
    assert resolve_hek_url(None) == "https://www.lmsal.com/hek/her"
    monkeypatch.setenv("FDFLARE_HEK_URL", "http://127.0.0.1:9/hek/her?")
    assert resolve_hek_url(None) == "http://127.0.0.1:9/hek/her"
    assert resolve_hek_url("https://example.org/her") == "https://example.org/her"
    for bad in ["file:///etc/passwd", "ftp://host/her", "not a url"]:
        with pytest.raises(InputError, match="http"):
            resolve_hek_url(bad)


# -- the CLI ------------------------------------------------------------------------------


def test_cli_hek_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "flares.csv"
    with FakeHEK(fail={"2011-03": [503]}) as hek:
        rc, stdout, err = run_cli(
            capsys,
            "--start", "2011-01-01", "--end", "2011-04-01", "--source", "hek",
            "--min-class", "C1.0", "--base-url", hek.url, "--backoff", "0.01",
            "--out", str(out), "--quiet",
        )  # fmt: skip
    assert rc == 0, err
    assert hek.months_requested().count("2011-03") == 2
    text = out.read_text().splitlines()
    assert text[0] == "start_time,goes_class,fl_lon,fl_lat"
    table = pd.read_csv(out, keep_default_na=False, dtype=str)
    assert list(zip(table["start_time"], table["goes_class"], strict=True)) == expected_rows(1e-6)
    row = table.set_index("goes_class").loc["M1.4"]  # no position in HEK: written empty
    assert (row["fl_lon"], row["fl_lat"]) == ("", "")
    assert read_catalog(out).attrs["format"] == "study"
    assert "1 duplicates removed" in stdout and "wrote" in stdout
    assert not (tmp_path / "flares.csv.parts").exists()  # default cache removed on success
    assert [p.name for p in tmp_path.iterdir()] == ["flares.csv"]  # no temporary files


def test_cli_hek_failed_month_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "flares.csv"
    args = [
        "--start", "2011-01-01", "--end", "2011-04-01", "--source", "hek", "--retries", "1",
        "--backoff", "0.01", "--out", str(out), "--quiet",
    ]  # fmt: skip
    with FakeHEK(fail={"2011-02": [500, 500]}) as hek:
        rc, _, err = run_cli(capsys, *args, "--base-url", hek.url)
        assert rc == 3  # a run failed (nothing written), not bad input
        assert "2011-02" in err and "1 of 3 month(s)" in err and "rerun" in err
        assert "the 2 month(s) fetched are kept in" in err
        assert not out.exists()
        cache = tmp_path / "flares.csv.parts"
        assert len(list(cache.glob("hek-*.json"))) == 2  # January and March kept
        first = len(hek.requests)
        rc, stdout, err = run_cli(capsys, *args, "--base-url", hek.url)
    assert rc == 0, err
    assert hek.months_requested()[first:] == ["2011-02"]  # only the missing month again
    assert "(2 from the cache)" in stdout
    assert len(pd.read_csv(out)) == len(expected_rows())
    assert not cache.exists()


def test_cli_hek_url_from_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "feb.csv"
    with FakeHEK() as hek:
        monkeypatch.setenv("FDFLARE_HEK_URL", hek.url)
        rc, _, err = run_cli(
            capsys, "--start", "2011-02-10", "--end", "2011-02-20", "--source", "hek",
            "--min-class", "M", "--out", str(out), "--quiet",
        )  # fmt: skip
    assert rc == 0, err
    assert hek.months_requested() == ["2011-02"]
    assert list(pd.read_csv(out)["goes_class"]) == ["M6.6", "X2.2", "M1.0"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--start", "2011-03-01", "--end", "2011-01-01", "--source", "hek"], "--end"),
        (["--start", "2011-01-01", "--source", "hek"], "needs both --start and --end"),
        (
            ["--start", "yesterday-ish", "--end", "2011-01-01", "--source", "hek"],
            "--start: invalid time 'yesterday-ish'",
        ),
        (
            [
                "--start",
                "2011-01-01",
                "--end",
                "2011-02-01",
                "--source",
                "hek",
                "--min-class",
                "Q1",
            ],
            "malformed GOES class",
        ),
        (
            [
                "--start",
                "2011-01-01",
                "--end",
                "2011-02-01",
                "--source",
                "hek",
                "--base-url",
                "file:///etc/passwd",
            ],
            "http",
        ),
    ],
)
def test_cli_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    out = tmp_path / "x.csv"
    rc, _, err = run_cli(capsys, *args, "--out", str(out))
    assert rc == 2
    assert words in err
    assert not out.exists()


def test_cli_bad_source_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.csv"
    missing = tmp_path / "nope.csv"
    rc, _, err = run_cli(capsys, "--source", str(missing), "--out", str(out))
    assert rc == 2 and str(missing) in err and "no such file" in err
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("time,class\n2011-01-01,C1.0\n")
    rc, _, err = run_cli(capsys, "--source", str(wrong), "--out", str(out))
    assert rc == 2 and str(wrong) in err and "missing column" in err
    broken = tmp_path / "goes-xrs-report_2011.txt"
    broken.write_text(
        NOAA_LINES[0] + "\n" + NOAA_LINES[0][:5] + "111315" + NOAA_LINES[0][11:] + "\n"
    )
    rc, _, err = run_cli(capsys, "--source", str(broken), "--out", str(out))
    assert rc == 2 and f"{broken}, line 2" in err
    assert not out.exists()


def test_cli_noaa_files_merge_filter_and_dedupe(
    noaa_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "alt.txt"
    other.write_text(NOAA_ALT_LINE + "\n" + NOAA_LINES[3] + "\n")
    out = tmp_path / "out.csv"
    rc, stdout, err = run_cli(
        capsys, "--source", str(noaa_file), str(other), "--start", "2011-01-01",
        "--end", "2012-01-01", "--min-class", "C1.0", "--out", str(out),
    )  # fmt: skip
    assert rc == 0, err
    table = pd.read_csv(out, keep_default_na=False, dtype=str)
    assert table.to_dict("list") == {
        "start_time": [
            "2011-01-15 11:49:00",
            "2011-01-15 11:49:00",
            "2011-02-15 01:44:00",
            "2011-03-09 23:13:00",
        ],
        "goes_class": ["C2.3", "C2.3", "X2.2", "X1.5"],
        "fl_lon": ["", "33.0", "12.0", "11.0"],
        "fl_lat": ["", "-25.0", "-20.0", "8.0"],
    }
    # X1.5 is in both files; 1989 is outside the range; B4.5 below C1.0.
    assert "1 duplicates removed" in stdout
    assert "1 outside the time range" in stdout and "1 below C1.0" in stdout
    assert "1 duplicate rows dropped" in stdout  # the repeated line of the NOAA report
    assert "1 records without an X-ray class" in stdout
    assert "duplicates dropped: 2 (1 within files, 1 across files)" in stdout


@pytest.mark.reference
def test_cli_reference_catalogs(
    reference_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = reference_dir / "catalogs" / "final_flare_list_sc24.csv"
    out = tmp_path / "flares.csv"
    rc, stdout, err = run_cli(
        capsys, "--source", str(src), "--start", "2011-01-01", "--end", "2011-07-01",
        "--min-class", "M1.0", "--out", str(out),
    )  # fmt: skip
    assert rc == 0, err
    full = read_catalog(src)
    want = full[
        (full["start_time"] >= "2011-01-01")
        & (full["start_time"] < "2011-07-01")
        & (full["flux"] >= 1e-5 * (1 - 1e-9))
    ].reset_index(drop=True)
    got = read_catalog(out)
    assert len(got) == len(want) > 20
    pd.testing.assert_series_equal(got["start_time"], want["start_time"])
    assert list(got["goes_class"]) == list(want["goes_class"])
    np.testing.assert_array_equal(got["fl_lon"].to_numpy(), want["fl_lon"].to_numpy())
    np.testing.assert_array_equal(got["fl_lat"].to_numpy(), want["fl_lat"].to_numpy())
    assert got["fl_lon"].isna().sum() == want["fl_lon"].isna().sum() > 0  # unknowns kept
    assert f"{len(want)} flares" in stdout

    # The SWPC list (no locations) for the same range agrees on the M/X flares' times.
    swpc = reference_dir / "catalogs" / "swpc_flarelist_20100101-20210810.csv"
    out2 = tmp_path / "swpc.csv"
    rc, _, err = run_cli(
        capsys, "--source", str(swpc), "--start", "2011-01-01", "--end", "2011-07-01",
        "--min-class", "M1.0", "--out", str(out2),
    )  # fmt: skip
    assert rc == 0, err
    swpc_cat = read_catalog(out2)
    assert swpc_cat["fl_lon"].isna().all()
    common = set(swpc_cat["start_time"]) & set(got["start_time"])
    assert len(common) >= 0.9 * len(got)


@pytest.mark.remote_data
def test_real_hek_lists_the_x2_flare_of_2011_02_15() -> None:
    cat = fetch_hek_catalog(
        "2011-02-15",
        "2011-02-16",
        min_class="X1.0",
        client=HEKFlareClient(timeout=60),
        progress=False,
    )
    row = cat[cat["goes_class"] == "X2.2"].iloc[0]
    assert row["start_time"] == pd.Timestamp("2011-02-15 01:44:00")
    assert abs(row["fl_lon"] - 12) < 3 and abs(row["fl_lat"] + 20) < 3


# -- bad input and the half-open range through the CLI ------------------------------------

STUDY_HEADER = "start_time,goes_class,fl_lon,fl_lat\n"


def _study(tmp_path: Path, name: str, rows: str) -> Path:
    path = tmp_path / name
    path.write_text(STUDY_HEADER + rows)
    return path


def test_cli_range_is_half_open(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _study(
        tmp_path,
        "c.csv",
        "2011-01-01 00:00:00,M1.0,1,1\n2011-01-01 12:00:00,M2.0,1,1\n2011-01-02 00:00:00,M3.0,1,1\n",
    )
    out = tmp_path / "out.csv"
    rc, stdout, err = run_cli(
        capsys, "--source", str(src), "--start", "2011-01-01", "--end", "2011-01-02",
        "--out", str(out),
    )  # fmt: skip
    assert rc == 0, err
    assert list(pd.read_csv(out)["goes_class"]) == ["M1.0", "M2.0"]  # --end excluded
    assert "1 outside the time range" in stdout


def test_cli_out_equal_to_source_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _study(tmp_path, "c.csv", "2011-01-01 00:10:00,C1.0,1,1\n2011-01-02 00:10:00,M1.0,1,1\n")
    before = src.read_bytes()
    rc, stdout, err = run_cli(
        capsys, "--source", str(src), "--out", str(src), "--min-class", "M1.0"
    )
    assert rc == 2 and stdout == ""
    assert (
        err
        == f"fdflare catalog: error: --out {src} is the input {src}; refusing to overwrite an input\n"
    )
    assert src.read_bytes() == before


def test_cli_out_is_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _study(tmp_path, "c.csv", "2011-01-01 00:10:00,C1.0,1,1\n")
    rc, _, err = run_cli(capsys, "--source", str(src), "--out", str(tmp_path))
    assert rc == 2 and len(err.splitlines()) == 1
    assert "is a folder; expected the path of a file" in err


def test_cli_duplicates_are_dropped_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = "2011-01-01 00:10:00,C1.0,1,1\n2011-01-02 00:10:00,M1.0,,\n"
    src = _study(tmp_path, "c.csv", rows * 3)
    out = tmp_path / "out.csv"
    rc, stdout, err = run_cli(capsys, "--source", str(src), "--out", str(out))
    assert rc == 0, err
    assert len(pd.read_csv(out)) == 2
    assert "4 duplicate rows dropped" in stdout and "wrote" in stdout
    assert read_catalog(src).attrs["duplicates_dropped"] == 4  # the label stage sees the same


def test_cli_mixed_time_zones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _study(
        tmp_path, "c.csv", "2011-02-01 00:39:00,M1.2,30,-15\n2011-02-01T00:40:00Z,M1.3,31,-15\n"
    )
    out = tmp_path / "out.csv"
    rc, _, err = run_cli(capsys, "--source", str(src), "--out", str(out))
    assert rc == 0, err
    assert list(pd.read_csv(out)["start_time"]) == ["2011-02-01 00:39:00", "2011-02-01 00:40:00"]
    bad = _study(
        tmp_path, "bad.csv", "2011-02-01 00:39:00,M1.2,30,-15\n2011-02-01T00:40:00Z,Q1.3,31,-15\n"
    )
    rc, _, err = run_cli(capsys, "--source", str(bad), "--out", str(out))
    assert rc == 2 and len(err.splitlines()) == 1
    assert f"{bad}, line 3, field 'goes_class'" in err and "Mixed timezones" not in err


def test_cli_row_with_too_many_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _study(
        tmp_path, "c.csv", "2011-01-01 00:10:00,C1.0,1,1,oops\n2011-01-02 00:10:00,M1.0,1,1\n"
    )
    out = tmp_path / "out.csv"
    rc, _, err = run_cli(capsys, "--source", str(src), "--out", str(out))
    assert rc == 2 and not out.exists()
    assert f"{src}, line 2: too many fields: 5 where the header has 4" in err
    assert "start_time" not in err.split("header has 4")[0]


def test_cli_trailing_comma_on_every_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _study(
        tmp_path, "c.csv", "2011-01-01 00:10:00,C1.0,1,1,\n2011-01-02 00:10:00,M1.0,2,2,\n"
    )
    out = tmp_path / "out.csv"
    rc, _, err = run_cli(capsys, "--source", str(src), "--out", str(out))
    assert rc == 2 and not out.exists() and len(err.splitlines()) == 1
    assert f"{src}, line 2: too many fields: 5 where the header has 4" in err
    assert "trailing comma" in err and "field 'start_time'" not in err


def test_cli_hek_garbage_until_retries_run_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "flares.csv"
    with FakeHEK(fail={"2011-02": ["garbage"] * 2}) as hek:
        rc, _, err = run_cli(
            capsys, "--start", "2011-02-01", "--end", "2011-03-01", "--source", "hek",
            "--base-url", hek.url, "--retries", "1", "--backoff", "0.01", "--out", str(out),
        )  # fmt: skip
    assert rc == 3 and len(err.splitlines()) == 1
    assert "reply is not JSON" in err and "gave up after 2 attempt(s)" in err
    assert ".parts" not in err  # nothing was kept, so no folder is pointed at
    assert not (tmp_path / "flares.csv.parts").exists() and not out.exists()


def test_cli_hek_unreachable_exits_3_after_one_month(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rc, _, err = run_cli(
        capsys, "--start", "2011-01-01", "--end", "2011-07-01", "--source", "hek",
        "--base-url", f"http://127.0.0.1:{port}/hek/her", "--retries", "1",
        "--backoff", "0.01", "--out", str(tmp_path / "f.csv"),
    )  # fmt: skip
    assert rc == 3
    assert err.startswith(f"fdflare catalog: error: cannot reach HEK at http://127.0.0.1:{port}")
    assert "2011-01-01 00:00..2011-02-01 00:00" in err  # stopped after the first month


def test_hek_honours_retry_after_with_the_shared_policy() -> None:
    waits: list[float] = []
    with FakeHEK(fail={"2011-02": ["429:17", 503]}) as hek:
        cat = fetch_hek_catalog(
            "2011-02-01", "2011-03-01", url=hek.url,
            client=HEKFlareClient(backoff=4.0, sleep=waits.append), progress=False,
        )  # fmt: skip
    assert "X2.2" in set(cat["goes_class"])
    assert waits[0] == 17.0  # the server's Retry-After
    assert 4.0 <= waits[1] <= 8.0  # second back-off: 2 * 4 s with jitter in [cap/2, cap]
    assert hek.months_requested() == ["2011-02"] * 3


def test_cli_read_only_out_folder(
    tmp_path: Path, read_only_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _study(tmp_path, "c.csv", "2011-01-01 00:10:00,C1.0,1,1\n")
    rc, stdout, err = run_cli(capsys, "--source", str(src), "--out", str(read_only_dir / "c.csv"))
    assert rc == 2 and stdout == ""
    assert err.startswith("fdflare catalog: error: --out ") and "is not writable" in err
    assert list(read_only_dir.iterdir()) == []


def test_cli_old_option_names_still_work_and_warn_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "flares.csv"
    with FakeHEK() as hek:
        rc, stdout, err = run_cli(
            capsys, "--start", "2011-02-01", "--end", "2011-03-01", "--source", "hek",
            "--hek-url", hek.url, "--retry-wait", "0.01", "--retry-wait", "0.02",
            "--timeout", "5", "--out", str(out), "--quiet", "--json",
        )  # fmt: skip
    assert rc == 0, err
    warnings = err.splitlines()
    for old, new in [("--hek-url", "--base-url"), ("--retry-wait", "--backoff"),
                     ("--timeout", "--connect-timeout and --read-timeout")]:  # fmt: skip
        said = [w for w in warnings if f"warning: {old} is deprecated" in w]
        assert len(said) == 1 and said[0].endswith(f"use {new}")  # once, though given twice
    result = json.loads(stdout)
    assert result["out"] == str(out) and result["flares"] == len(pd.read_csv(out))
    assert result["counts"]["months"] == 1 and isinstance(result["notes"], list)


def test_cli_source_format_is_an_alias_of_catalog_format(
    noaa_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = run_cli(
        capsys, "--source", str(noaa_file), "--source-format", "study",
        "--out", str(tmp_path / "f.csv"),
    )  # fmt: skip
    assert rc == 2  # the NOAA file read as the study's CSV: refused, so the alias took effect
    assert "--source-format is deprecated" in err and "use --catalog-format" in err
