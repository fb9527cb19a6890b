import subprocess
import sys

import pytest

from fdflare import __version__
from fdflare.cli import COMMANDS, build_parser, main


def test_help_lists_the_stages(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for name in ("label", "evaluate", "spatial", "reproduce"):
        assert name in out


def test_every_listed_command_builds():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert list(sub.choices) == list(COMMANDS)


def test_a_command_module_that_does_not_import_is_an_error(monkeypatch):
    import importlib

    real = importlib.import_module

    def broken(name, *args, **kwargs):
        if name == "fdflare.commands.spatial":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError, match=r"fdflare\.commands\.spatial"):
        build_parser()


@pytest.mark.parametrize(
    "argv",
    [
        ["label", "--bogus"],
        ["evaluate"],
        ["spatial", "--bin-deg", "x"],
        ["nosuchcommand"],
    ],
)
def test_argument_errors_are_one_line_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("fdflare") and ": error: " in err


def test_exit_statuses_are_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "0 done, 1 done but some items failed, 2 bad arguments or input, 3 a run failed" in out


def test_a_closed_pipe_ends_quietly(tmp_path):
    import os

    f = tmp_path / "fold1.csv"
    rows = "\n".join(f"HMI.m2011.01.01_{h:02d}.00.00.jpg,0.{h % 9 + 1},{h % 2}" for h in range(24))
    f.write_text("timestamp,flare_prob,target\n" + rows + "\n")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before a byte is written, like `| head -0`
    try:
        res = subprocess.run(
            [sys.executable, "-m", "fdflare", "evaluate", str(f)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr, res.stderr
    assert res.stderr == ""
    assert res.returncode == 141


def test_python_dash_m_and_version():
    res = subprocess.run(
        [sys.executable, "-m", "fdflare", "--version"], capture_output=True, text=True, check=True
    )
    assert res.stdout.strip() == f"fdflare {__version__}"


def test_cli_import_stays_light():
    code = "import sys, fdflare.cli; fdflare.cli.build_parser(); print(sorted(m for m in ('torch', 'sunpy', 'captum', 'lightning', 'matplotlib') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"


def test_atomic_write_leaves_nothing_on_failure_and_normal_mode(tmp_path):
    import os

    import pytest

    from fdflare.core.io import atomic_open, write_text_atomic

    write_text_atomic(tmp_path / "a.txt", "hello")
    assert (tmp_path / "a.txt").read_text() == "hello"
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(RuntimeError), atomic_open(tmp_path / "b.txt") as fh:
        fh.write("partial")
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


@pytest.mark.parametrize(
    ("argv", "words", "heavy"),
    [
        (["train", "--labels", "x", "--images", "y", "--out", "o", "--accelerator", "gpu"],
         "no CUDA GPU", "lightning"),
        (["explain", "--checkpoint", "nope.ckpt", "--images", ".", "--out", "o"],
         "--checkpoint nope.ckpt: no such file", "torch"),
        (["forecast", "--checkpoint", "nope.ckpt", "--time", "2011-01-01"],
         "--checkpoint nope.ckpt: no such file", "torch"),
        (["forecast", "--ensemble", "nope.json", "--time", "2011-01-01"],
         "--ensemble nope.json: no such file", "torch"),
    ],
)  # fmt: skip
def test_refusals_come_before_heavy_imports(argv, words, heavy, tmp_path):
    import os

    if heavy == "lightning" and any(
        os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidia0")
    ):
        pytest.skip("this machine has a CUDA driver: the GPU check needs torch here")
    code = (
        "import sys\nfrom fdflare.cli import main\n"
        f"status = main({argv!r})\n"
        f"print(status, {heavy!r} in sys.modules)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert res.stdout.split() == ["2", "False"], (res.stdout, res.stderr)
    assert words in res.stderr and res.stderr.count("\n") == 1


def test_help_names_every_model_train_takes(capsys):
    from fdflare.models.registry import list_models

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in list_models())


def test_every_command_takes_quiet():
    parser = build_parser()
    sub = next(
        a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction)
    )
    missing = [
        name
        for name, p in sub.choices.items()
        if not any("--quiet" in a.option_strings for a in p._actions)
    ]
    assert missing == []


def test_quiet_silences_a_report_but_not_errors(tmp_path, capsys):
    pred = tmp_path / "fold1.csv"
    rows = [f"2011/01/0{1 + i % 9}/HMI.m2011.01.0{1 + i % 9}_{i:02d}.00.00.jpg,{(i % 4) / 4},{i % 2}"
            for i in range(20)]  # fmt: skip
    pred.write_text("timestamp,flare_prob,target\n" + "\n".join(rows) + "\n")
    assert main(["evaluate", str(pred)]) == 0
    assert "fold1.csv" in capsys.readouterr().out
    assert main(["evaluate", "--quiet", str(pred)]) == 0
    assert capsys.readouterr().out == ""
    assert main(["evaluate", "--quiet", str(tmp_path / "nope.csv")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "nope.csv" in err and err.count("\n") == 1
