import numpy as np
import pandas as pd
import pytest

from fdflare.acquire.catalog import read_catalog, write_catalog
from fdflare.core.errors import InputError


def test_reference_catalogs(reference_dir):
    partial = read_catalog(reference_dir / "flare_catalog_partial.csv")
    assert partial.attrs["format"] == "study" and len(partial) == 2739
    hek = read_catalog(reference_dir / "catalogs" / "final_flare_list_sc24.csv")
    assert hek.attrs["format"] == "hek" and len(hek) == 8606
    assert int(hek["fl_lon"].notna().sum()) == 8302
    swpc = read_catalog(reference_dir / "catalogs" / "swpc_flarelist_20100101-20210810.csv")
    assert swpc.attrs["format"] == "swpc" and swpc["fl_lon"].isna().all()
    assert swpc["start_time"].iloc[0] == pd.Timestamp("2010-01-02 07:09:00")
    assert swpc["start_time"].is_monotonic_increasing


def _write(tmp_path, text, name="cat.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_unknown_and_placeholder_locations_become_missing(tmp_path):
    p = _write(
        tmp_path,
        "start_time,goes_class,fl_lon,fl_lat\n"
        "2011-01-01 00:10:00,M1.0,0,0\n"
        "2011-01-01 00:20:00,X2.0,UNK,UNK\n"
        "2011-01-01 00:30:00,C3.0,,\n"
        "2011-01-01 00:40:00,C4.0,0,12\n",
    )
    cat = read_catalog(p)
    assert cat["fl_lon"].isna().tolist() == [True, True, True, False]
    assert cat.loc[3, "fl_lon"] == 0.0  # a real zero longitude with a latitude is kept
    assert cat.attrs["placeholder_locations"] == 1


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ("2011-01-01 00:10:00,Q1.0,1,1", "goes_class"),
        ("2011-01-01 00:10:00,M,1,1", "goes_class"),
        ("2011-01-01 00:10:00,,1,1", "goes_class"),
        ("2011-13-01 00:10:00,M1.0,1,1", "start_time"),
        ("yesterday,M1.0,1,1", "start_time"),
        ("2011-01-01 00:10:00,M1.0,east,1", "fl_lon"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, row, field):
    p = _write(
        tmp_path, "start_time,goes_class,fl_lon,fl_lat\n2011-01-01 00:00:00,C1.0,1,1\n" + row + "\n"
    )
    with pytest.raises(InputError) as err:
        read_catalog(p)
    msg = str(err.value)
    assert str(p) in msg and "line 3" in msg and f"field '{field}'" in msg


def test_missing_column(tmp_path):
    p = _write(tmp_path, "start_time,goes_class,fl_lon\n2011-01-01 00:00:00,C1.0,1\n")
    with pytest.raises(InputError, match=r"missing column.*fl_lat"):
        read_catalog(p)


def test_write_catalog_round_trip(tmp_path):
    cat = pd.DataFrame(
        {
            "start_time": pd.to_datetime(["2011-01-01 00:10:00", "2011-01-02 00:10:00"]),
            "goes_class": ["M1.0", "X10"],
            "flux": [1e-5, 1e-3],
            "fl_lon": [12.5, np.nan],
            "fl_lat": [-3.0, np.nan],
        }
    )
    write_catalog(cat, tmp_path / "c.csv")
    back = read_catalog(tmp_path / "c.csv")
    assert back["goes_class"].tolist() == ["M1.0", "X10"]
    assert back["fl_lon"].isna().tolist() == [False, True]


HEADER = "start_time,goes_class,fl_lon,fl_lat\n"


def test_exact_duplicates_are_dropped_and_counted(tmp_path):
    p = _write(
        tmp_path,
        HEADER + "2011-01-01 00:10:00,M1.0,10,5\n"
        "2011-01-01 00:10:00,M1.0,10,5\n"
        "2011-01-01 00:10:00,M1.0,,\n"  # another location: another flare
        "2011-01-01 00:10:00,M1.0,UNK,UNK\n"  # unknown equals unknown: a repeat
        "2011-01-01 00:10:00,M1.1,10,5\n",  # another class: another flare
    )
    cat = read_catalog(p)
    assert cat.attrs["duplicates_dropped"] == 2
    assert list(cat["goes_class"]) == ["M1.0", "M1.0", "M1.1"]
    assert (
        read_catalog(_write(tmp_path, HEADER + "2011-01-01 00:10:00,M1.0,1,1\n", "one.csv")).attrs[
            "duplicates_dropped"
        ]
        == 0
    )


def test_mixed_time_zone_notations_parse_as_utc(tmp_path):
    p = _write(
        tmp_path,
        HEADER + "2011-02-01 00:39:00,M1.2,30,-15\n"
        "2011-02-01T00:40:00Z,M1.3,31,-15\n"
        "2011-02-01T05:41:00+05:00,M1.4,32,-15\n",
    )
    cat = read_catalog(p)
    assert list(cat["start_time"]) == list(
        pd.to_datetime(["2011-02-01 00:39", "2011-02-01 00:40", "2011-02-01 00:41"])
    )
    assert cat["start_time"].dtype == "datetime64[ns]"


def test_bad_time_among_mixed_zones_names_its_line(tmp_path):
    p = _write(
        tmp_path, HEADER + "2011-02-01 00:39:00,M1.2,30,-15\n2011-02-01T25:40:00Z,M1.3,1,1\n"
    )
    with pytest.raises(InputError) as err:
        read_catalog(p)
    assert (err.value.path, err.value.line, err.value.field) == (str(p), 3, "start_time")


@pytest.mark.parametrize(
    ("rows", "line", "words"),
    [
        ("2011-01-01 00:10:00,M1.0,1,1,extra\n2011-01-01 00:20:00,M1.0,1,1\n", 2, "too many"),
        ("2011-01-01 00:10:00,M1.0,1,1\n2011-01-01 00:20:00,M1.0,1,1,2\n", 3, "too many"),
        ("2011-01-01 00:10:00,M1.0,1,1\n2011-01-01 00:20:00,M1.0\n", 3, "too few"),
    ],
)
def test_row_with_the_wrong_number_of_fields_is_named(tmp_path, rows, line, words):
    p = _write(tmp_path, HEADER + rows)
    with pytest.raises(InputError) as err:
        read_catalog(p)
    assert err.value.line == line and err.value.field is None
    assert f"{words} fields" in str(err.value) and str(p) in str(err.value)


def test_unnamed_index_column_is_still_read(tmp_path):
    # every row one field longer than the header: pandas' unnamed index column
    p = _write(tmp_path, HEADER + "0,2011-01-01 00:10:00,M1.0,1,1\n1,2011-01-01 00:20:00,C1.0,,\n")
    assert list(read_catalog(p)["goes_class"]) == ["M1.0", "C1.0"]
    # an index column with no flare located: every row ends empty, and still an index
    p = _write(tmp_path, HEADER + "0,2011-01-01 00:10:00,M1.0,,\n1,2011-01-01 00:20:00,C1.0,,\n")
    assert list(read_catalog(p)["goes_class"]) == ["M1.0", "C1.0"]


@pytest.mark.parametrize(
    ("rows", "line", "count"),
    [
        # a trailing comma on every row: not an index column, the row is one field too long
        ("2011-01-01 00:10:00,M1.0,1,1,\n2011-01-01 00:20:00,C1.0,,,\n", 2, 2),
        ("2011-01-01 00:10:00,M1.0,1,1\n2011-01-01 00:20:00,C1.0,2,2,\n", 3, 1),
    ],
)
def test_trailing_comma_is_one_field_too_many_not_a_shifted_field(tmp_path, rows, line, count):
    p = _write(tmp_path, HEADER + rows)
    with pytest.raises(InputError) as err:
        read_catalog(p)
    assert err.value.line == line and err.value.field is None
    assert "too many fields: 5 where the header has 4" in str(err.value)
    assert "trailing comma" in str(err.value) and f"{count} such row(s)" in str(err.value)
