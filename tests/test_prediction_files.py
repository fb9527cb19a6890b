"""Prediction files: one reader (fdflare.inference.predictions) behind evaluate, explain and spatial."""

from __future__ import annotations

import numpy as np
import pytest

from clitools import run_cli
from fdflare.analysis.explain_select import read_prediction_table
from fdflare.analysis.metrics import read_predictions
from fdflare.analysis.spatial import read_spatial_table
from fdflare.core.errors import InputError
from fdflare.inference.predictions import read_prediction_file

HEAD = "label,flare_prob,target,goes_class,fl_lon,fl_lat,fl_start\n"
GOOD = "a.png,0.9,1,M1.0,10,5,2011-01-01 01:00:00\nb.png,0.1,0,,,,\n"
READERS = [read_predictions, read_prediction_table, read_spatial_table]


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.__name__)
@pytest.mark.parametrize(
    ("rows", "words"),
    [
        ("a.png,0.2,1,M1.0,1,1,\n", "line 4, field 'label': a second row for a.png"),
        ("c.png,1.5,1,M1.0,1,1,\n", "line 4, field 'flare_prob': probability 1.5 is not"),
        ("c.png,0.5,2,M1.0,1,1,\n", "line 4, field 'target': target 2 is not 0 or 1"),
        ("c.png,0.5,1,Q1.0,1,1,\n", "line 4, field 'goes_class': not a GOES class: 'Q1.0'"),
        ("c.png,0.5,1,M1.0,200,1,\n", "line 4, field 'fl_lon': longitude 200 is not a number"),
        ("c.png,0.5,1,M1.0,10,,\n", "line 4, field 'fl_lat': a location needs both"),
    ],
)
def test_every_reader_holds_a_joined_table_to_the_same_rules(tmp_path, reader, rows, words):
    path = tmp_path / "p_joined.csv"
    path.write_text(HEAD + GOOD + rows)
    with pytest.raises(InputError, match=words) as err:
        reader(path)
    assert str(err.value).startswith(str(path))


def test_the_three_layouts_read_alike(tmp_path):
    joined = tmp_path / "joined.csv"
    joined.write_text(HEAD + GOOD)
    study = tmp_path / "alex_m_class.csv"
    study.write_text(
        "timestamp,flare_prob,goes_class,fl_location,flare_start\n"
        'a.png,0.9,M1.0,"(10, 5)",2011-01-01 01:00:00\nb.png,0.1,NF,,\n'
    )
    plain = tmp_path / "fold1.csv"
    plain.write_text("timestamp,flare_prob,target\na.png,0.9,1\nb.png,0.1,0\n")
    a = read_prediction_file(joined, need=("id", "target", "goes_class", "location"))
    b = read_prediction_file(study, need=("id", "goes_class", "location"))
    c = read_prediction_file(plain, need=("id", "target"))
    assert a.attrs["id_column"] == "label" and b.attrs["id_column"] == "timestamp"
    for t in (a, b):
        assert t["goes_class"].tolist() == ["M1.0", ""]
        np.testing.assert_array_equal(t["fl_lon"], [10.0, np.nan])
        np.testing.assert_array_equal(t["fl_lat"], [5.0, np.nan])
    assert a["target"].tolist() == c["target"].tolist() == [1, 0]
    assert c["flare_prob"].tolist() == [0.9, 0.1] and not c.attrs["has_location"]
    with pytest.raises(InputError, match="field 'goes_class': missing column 'goes_class'"):
        read_prediction_file(plain, need=("goes_class",))


def test_cli_spatial_refuses_what_evaluate_refuses(tmp_path, capsys):
    """`spatial` once counted an image's second row twice and took any target; `evaluate`
    refused both. The one reader refuses them for every command."""
    path = tmp_path / "p_joined.csv"
    path.write_text(HEAD + GOOD + "a.png,0.2,1,M1.0,1,1,\n")
    for command in (["evaluate"], ["spatial", "--json"]):
        code, err = run_cli([*command, str(path)], capsys)
        assert code == 2
        assert err.strip() == (
            f"fdflare {command[0]}: error: {path}, line 4, field 'label': a second row for "
            "a.png (it would be counted twice)"
        )
    path.write_text(HEAD + GOOD + "c.png,0.2,yes,M1.0,1,1,\n")
    code, err = run_cli(["spatial", "--json", str(path)], capsys)
    assert code == 2 and "line 4, field 'target': target 'yes' is not 0 or 1" in err
    path.write_text(HEAD + GOOD)
    code, _ = run_cli(["spatial", "--json", str(path)], capsys)
    assert code == 0


@pytest.mark.parametrize("marker", ["NA", "N/A", "NULL", "None", "nan"])
def test_missing_value_markers_read_as_no_flare_and_unknown_location(tmp_path, marker):
    """The markers pandas reads as missing (R writes NA) were accepted by spatial before."""
    path = tmp_path / "p_x_class.csv"
    path.write_text(
        "timestamp,flare_prob,goes_class,fl_location\n"
        'a.png,0.9,M1.0,"(10, 5)"\n'
        f"b.png,0.1,{marker},{marker}\n"
    )
    table = read_spatial_table(path)
    assert table["goes_class"].tolist() == ["M1.0", ""]
    assert np.isnan(table["lon"].iloc[1]) and np.isnan(table["lat"].iloc[1])
