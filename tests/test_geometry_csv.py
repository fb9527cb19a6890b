"""geometry.csv: one schema, one reader and one writer (fdflare.prepare.geometry) for every command."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clitools import run_cli
from fdflare.core.errors import InputError
from fdflare.prepare.geometry import (
    GEOMETRY_COLUMNS,
    PREPARE_GEOMETRY_COLUMNS,
    SYNTH_GEOMETRY_COLUMNS,
    read_geometry_file,
    write_geometry_file,
)
from fdflare.synth.config import SynthConfig
from fdflare.synth.writer import generate

HEAD = "path,date_obs,center_x,center_y,radius_px,width,height,b0_deg\n"


def test_both_writers_write_the_one_schema_and_the_reader_reads_it(tmp_path):
    assert set(PREPARE_GEOMETRY_COLUMNS) <= set(GEOMETRY_COLUMNS)
    assert set(SYNTH_GEOMETRY_COLUMNS) <= set(GEOMETRY_COLUMNS)
    config = SynthConfig(start="2011-01-01", end="2011-01-01T03:00", size=32)
    generate(tmp_path / "s", config, progress=False)
    table = read_geometry_file(tmp_path / "s" / "geometry.csv", require=SYNTH_GEOMETRY_COLUMNS)
    assert tuple(table.columns) == SYNTH_GEOMETRY_COLUMNS and len(table) == 4
    assert table["width"].dtype == np.int64 and table["radius_px"].dtype == np.float64
    # written back unchanged: the reader keeps every value the writer wrote
    write_geometry_file(tmp_path / "again.csv", table, float_format=None)
    assert (tmp_path / "again.csv").read_text() == (tmp_path / "s" / "geometry.csv").read_text()
    with pytest.raises(ValueError, match="unknown columns"):
        write_geometry_file(tmp_path / "x.csv", table.assign(extra=1))


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        (
            "a.png,t,1,1,5,8,8,0\na.png,t,1,1,5,8,8,0\n",
            "line 3, field 'path': a second row for a.png",
        ),
        ("a.png,t,1,1,0,8,8,0\n", "line 2, field 'radius_px': '0' is not a positive number"),
        ("a.png,t,1,1,5,8.5,8,0\n", "line 2, field 'width': '8.5' is not a positive whole number"),
        ("a.png,t,1,1,5,8,8,91\n", "line 2, field 'b0_deg': '91' is not a latitude"),
        ("a.png,t,1,,5,8,8,0\n", "line 2, field 'center_y': '' is not a finite number"),
    ],
)
def test_reader_names_file_line_and_field(tmp_path, rows, words):
    path = tmp_path / "geometry.csv"
    path.write_text(HEAD + rows)
    with pytest.raises(InputError, match=words) as err:
        read_geometry_file(path)
    assert str(err.value).startswith(str(path))


def test_optional_numbers_may_be_empty_and_missing_columns_are_named(tmp_path):
    path = tmp_path / "geometry.csv"
    path.write_text(HEAD + "a.png,,1,1,5,,,\n")
    row = read_geometry_file(path).iloc[0]
    assert row["radius_px"] == 5 and np.isnan(row["width"]) and np.isnan(row["b0_deg"])
    path.write_text("path,center_x\na.png,1\n")
    with pytest.raises(InputError, match="line 1, field 'center_y': missing column"):
        read_geometry_file(path)


def test_cli_spatial_refuses_a_geometry_that_explain_refuses(tmp_path, capsys):
    """`spatial --geometry` once took the first of two rows for an image, and checked only
    that row; `explain` refused both. The one reader refuses them for every command."""
    img = np.zeros((64, 64), np.uint8)
    Image.fromarray(img).save(tmp_path / "m.png")
    geo = tmp_path / "geometry.csv"
    args = ["spatial", "--out", str(tmp_path / "o"), "--disk-image", str(tmp_path / "m.png")]
    args += ["--geometry", str(geo)]
    geo.write_text(HEAD + "m.png,t,32,30,25,64,64,0\nm.png,t,30,30,20,64,64,0\n")
    code, err = run_cli(args, capsys)
    assert code == 2
    assert err.strip() == (
        f"fdflare spatial: error: {geo}, line 3, field 'path': a second row for m.png"
    )
    geo.write_text(HEAD + "m.png,t,32,30,25,64,64,0\nother.png,t,32,30,-1,64,64,0\n")
    code, err = run_cli(args, capsys)
    assert code == 2 and "line 3, field 'radius_px'" in err
    geo.write_text(HEAD + "m.png,t,32,30,25,64,64,0\n")
    code, _ = run_cli(args, capsys)
    assert code == 0 and (tmp_path / "o" / "disk.png").is_file()
    assert pd.read_csv(geo)["radius_px"].tolist() == [25]
