"""The one output guard and the output-folder lock (fdflare.core.outputs)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from fdflare.core.errors import BusyError, OutputError
from fdflare.core.outputs import LOCK_NAME, check_output_dir, check_output_file, output_lock


def test_output_file_may_not_be_an_input(tmp_path):
    ckpt = tmp_path / "run" / "last.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"weights")
    with pytest.raises(OutputError, match="is the input"):
        check_output_file(ckpt, inputs=[ckpt])
    # the same file under another spelling, and through a symbolic link
    with pytest.raises(OutputError, match="is the input"):
        check_output_file(tmp_path / "run" / ".." / "run" / "last.ckpt", inputs=[ckpt])
    (tmp_path / "link.ckpt").symlink_to(ckpt)
    with pytest.raises(OutputError, match="is the input"):
        check_output_file(tmp_path / "link.ckpt", inputs=[str(ckpt)])
    assert ckpt.read_bytes() == b"weights"
    assert check_output_file(tmp_path / "run" / "pred.csv", inputs=[ckpt, None]) == (
        tmp_path / "run" / "pred.csv"
    )


def test_output_file_kind_and_parent(tmp_path):
    with pytest.raises(OutputError, match="is a folder"):
        check_output_file(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file, so no folder"):
        check_output_file(tmp_path / "f" / "sub" / "out.csv")
    # a missing parent folder is fine: the command makes it
    check_output_file(tmp_path / "new" / "deeper" / "out.csv")
    assert not (tmp_path / "new").exists()  # the check itself creates nothing


def test_output_dir_kind_and_inputs(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file; expected a folder"):
        check_output_dir(tmp_path / "file")
    images = tmp_path / "images"
    images.mkdir()
    with pytest.raises(OutputError, match="is the input"):
        check_output_dir(images, inputs=[images])
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "labels.csv").write_text("label,goes_class\n")
    with pytest.raises(OutputError, match=r"would overwrite \(labels.csv\)"):
        check_output_dir(labels, inputs=[labels / "labels.csv"], writes=["labels.csv"])
    assert check_output_dir(tmp_path / "out", inputs=[images]) == tmp_path / "out"


def test_lock_refuses_a_second_run_and_names_the_first(tmp_path):
    out = tmp_path / "labels"
    with output_lock(out, command="label"):
        with pytest.raises(BusyError, match=r"in use by `fdflare label` \(pid \d+\)"):
            with output_lock(out, command="label"):
                pass  # pragma: no cover - never entered
    with output_lock(out, command="label"):  # released: a later run may take it
        pass
    assert (out / LOCK_NAME).is_file()


def test_lock_refuses_a_run_in_another_process(tmp_path):
    out = tmp_path / "o"
    code = textwrap.dedent(
        f"""
        import sys
        from fdflare.core.outputs import output_lock
        from fdflare.core.errors import BusyError
        try:
            with output_lock({str(out)!r}, command="other"):
                pass
        except BusyError as exc:
            print(exc)
            sys.exit(7)
        """
    )
    with output_lock(out, command="label"):
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 7, res.stderr
    assert "in use by `fdflare label`" in res.stdout


def test_failed_run_leaves_no_folder_it_created(tmp_path):
    out = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError), output_lock(out, command="reproduce"):
        raise RuntimeError("failed")
    assert not (tmp_path / "a").exists()
    # a folder that existed, or one the run wrote into, stays
    out.mkdir(parents=True)
    with pytest.raises(RuntimeError), output_lock(out, command="x"):
        raise RuntimeError("failed")
    assert out.is_dir()
    fresh = tmp_path / "c"
    with pytest.raises(RuntimeError), output_lock(fresh, command="x"):
        (fresh / "result.csv").write_text("kept")
        raise RuntimeError("failed")
    assert (fresh / "result.csv").read_text() == "kept"


def test_read_only_folder_is_refused_up_front(read_only_dir):
    for check, path in (
        (check_output_dir, read_only_dir),
        (check_output_file, read_only_dir / "x.csv"),
        (check_output_dir, read_only_dir / "new" / "deeper"),
    ):
        with pytest.raises(OutputError, match="is not writable"):
            check(path)
