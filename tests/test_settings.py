"""One settings mechanism: synth, label and spatial generate their options from their configs.

Every bounded field of ``SynthConfig``, ``LabelConfig`` and ``SpatialConfig`` is tried just
outside its bounds through the real CLI: one line naming the option, exit status 2,
nothing written. The help shows each field's help, range and default, from the field.
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import fields
from pathlib import Path

import pytest

from clitools import run_cli
from fdflare.analysis.spatial import SpatialConfig
from fdflare.cli import build_parser
from fdflare.core.errors import InputError
from fdflare.core.settings import default_of, option_name, range_words, read_settings, updated
from fdflare.label import LabelConfig
from fdflare.synth.config import SynthConfig

CONFIGS = {"synth": SynthConfig, "label": LabelConfig, "spatial": SpatialConfig}


def _argv(command: str, tmp_path: Path) -> list[str]:
    """The command with its required inputs (real files) and an output that must not appear."""
    out = str(tmp_path / "out")
    if command == "synth":
        return ["synth", "--out", out, "--quiet"]
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("start_time,goes_class,fl_lon,fl_lat\n2011-01-01 05:00:00,M1.0,1,1\n")
    if command == "label":
        images = tmp_path / "images.txt"
        images.write_text("2011/01/01/HMI.m2011.01.01_00.00.00.jpg\n")
        return ["label", "--catalog", str(catalog), "--images", str(images), "--out", out]
    joined = tmp_path / "joined.csv"
    joined.write_text('label,prob,goes_class,fl_location,date\na,0.9,X1.0,"(10, 5)",2011-01-01\n')
    return ["spatial", "--out", out, str(joined)]


def _outside(meta: typing.Mapping[str, typing.Any]) -> list[str]:
    """Values just outside a field's bounds (the bound itself where it is excluded)."""
    values = []
    if meta["low"] is not None:
        values.append(str(meta["low"]) if meta["low_open"] else str(meta["low"] - 1))
    if meta["high"] is not None:
        values.append(str(meta["high"]) if meta["high_open"] else str(meta["high"] + 1))
    return values


BOUNDED = [
    (command, f.name, value)
    for command, cls in CONFIGS.items()
    for f in fields(cls)
    if "help" in f.metadata
    for value in _outside(f.metadata)
]


def test_every_command_has_bounded_settings() -> None:
    assert {command for command, _, _ in BOUNDED} == set(CONFIGS)


@pytest.mark.parametrize(("command", "name", "value"), BOUNDED)
def test_a_value_outside_a_fields_bounds_is_one_line_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, name: str, value: str
) -> None:
    f = next(f for f in fields(CONFIGS[command]) if f.name == name)
    argv = [*_argv(command, tmp_path), option_name(f), value]
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert err.startswith(f"fdflare {command}: error: argument {option_name(f)}: "), err
    assert range_words(f.metadata) in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("command", "extra", "words"),
    [
        ("synth", ["--cadence", "soon"], "argument --cadence: 'soon': cannot read cadence"),
        ("synth", ["--start", "2011-02-05", "--end", "2011-02-01"], "--end: end 2011-02-01"),
        ("label", ["--window", "0s"], "argument --window: '0s': expected a duration above 1s"),
        ("label", ["--start", "2012-01-02", "--end", "2012-01-01"], "--end: 2012-01-01"),
        ("label", ["--split", "chronological"], "--split chronological needs --select-from"),
        ("spatial", ["--bin-deg", "7"], "--bin-deg: 7 does not divide 180"),
    ],
)
def test_checks_beyond_the_bounds_name_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, extra: list[str], words: str
) -> None:
    code, err = run_cli([*_argv(command, tmp_path), *extra], capsys)
    assert code == 2 and err.startswith(f"fdflare {command}: error: ") and words in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", list(CONFIGS))
def test_the_help_of_each_option_is_its_fields(command: str) -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    parser: argparse.ArgumentParser = sub.choices[command]
    by_flag = {s: a for a in parser._actions for s in a.option_strings}
    for f in fields(CONFIGS[command]):
        if "help" not in f.metadata or (command, f.name) == ("synth", "end"):
            continue  # synth's --end is the end of a half-open range, not the config's last image
        action = by_flag[option_name(f)]
        text = action.help.replace("%%", "%")
        assert text.startswith(f.metadata["help"]), (command, f.name)
        assert range_words(f.metadata) in text, (command, f.name)
        default = default_of(f)
        shown = "none" if default is None else "no" if default is False else str(default)
        assert text.endswith(f"default {shown})"), (command, f.name, text)


@pytest.mark.parametrize("cls", list(CONFIGS.values()))
def test_a_settings_file_names_the_file_and_the_key(tmp_path: Path, cls: type) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("no_such_setting: 1\n")
    with pytest.raises(InputError, match=r"settings\.yaml, field 'no_such_setting': unknown"):
        updated(cls(), read_settings(path), path=path)
    bounded = next(f for f in fields(cls) if f.metadata.get("low") is not None)
    path.write_text(f"{bounded.name}: {_outside(bounded.metadata)[0]}\n")
    with pytest.raises(InputError, match=rf"settings\.yaml, field '{bounded.name}': .* must"):
        updated(cls(), read_settings(path), path=path)


def test_the_old_synth_size_spelling_still_sets_the_image_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["synth", "--out", str(tmp_path / "s"), "--end", "2011-01-01T01:00", "--quiet"]
    code, err = run_cli([*argv, "--size", "16"], capsys)
    assert code == 0 and "--size is deprecated" in err and "--image-size" in err, err
    assert '"size": 16' in (tmp_path / "s" / "synth.json").read_text()


@pytest.mark.parametrize("spelling", ["AUTO", "Auto", " auto"])
def test_a_word_choice_is_read_whatever_its_case(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spelling: str
) -> None:
    argv = ["synth", "--out", str(tmp_path / "s"), "--end", "2011-01-01T01:00", "--quiet"]
    code, err = run_cli([*argv, "--image-size", "16", "--b0", spelling], capsys)
    assert code == 0, err
    assert '"b0": "auto"' in (tmp_path / "s" / "synth.json").read_text()
