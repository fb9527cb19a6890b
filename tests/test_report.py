"""fdflare report: one self-contained HTML page, checked in a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from fdflare.cli import main


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip(
            "no Chromium on this machine (Debian: apt-get install chromium; .ci/run installs it)"
        )
    return path


def open_in_browser(html: Path, screenshot: Path | None = None) -> dict:
    """Load ``html`` in headless Chromium; return console messages, requests and page facts."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the 'test' extra installs playwright"
    )
    exe = _chromium()
    found: dict = {"console": [], "errors": [], "requests": []}
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=exe,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: found["console"].append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: found["errors"].append(str(e)))
            page.on("request", lambda r: found["requests"].append(r.url))
            page.goto(html.as_uri())
            found["title"] = page.title()
            found["images"] = page.evaluate(
                "Array.from(document.images).map(i => [i.complete, i.naturalWidth])"
            )
            found["text"] = page.inner_text("body")
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return found


def _assert_clean(found: dict, html: Path) -> None:
    assert found["console"] == [] and found["errors"] == [], found
    # nothing but the page itself was requested: figures are embedded
    assert found["requests"] == [html.as_uri()], found["requests"]
    assert found["images"] and all(ok and w > 0 for ok, w in found["images"]), found["images"]


@pytest.mark.reference
def test_reproduction_report_in_a_browser(reference_dir, tmp_path, capsys):
    out = tmp_path / "repro"
    assert main(["reproduce", "--reference", str(reference_dir), "--out", str(out)]) == 0
    capsys.readouterr()
    html = out / "report.html"
    text = html.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    found = open_in_browser(html, tmp_path / "shot.png")
    _assert_clean(found, html)
    body = found["text"]
    for expected in (
        "0.5621",  # fold 1 TSS
        "0.5259 ± 0.0407",
        "persistence",
        "climatology",
        "Mean HSS2 does NOT beat persistence",
        "Reliability diagram",
        "near-limb",
        "1276",  # M near-limb TP
    ):
        assert expected in body, expected
    assert (tmp_path / "shot.png").stat().st_size > 10_000
    # `fdflare report` on the same folder writes the same page
    assert main(["report", str(out), "--out", str(tmp_path / "again.html")]) == 0
    assert (tmp_path / "again.html").read_text() == text


def test_report_of_a_train_run_shows_curves_and_settings(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "resnet18", "epochs": 3, "lr": 0.01}))
    (run / "metrics.csv").write_text(
        "epoch,train_loss,val_loss,val_tss,val_hss2\n0,0.69,0.70,0.10,0.08\n1,0.60,0.65,0.25,0.2\n2,0.55,0.66,0.3,0.22\n"
    )
    (run / "summary.json").write_text(json.dumps({"best_epoch": 2}))
    html = tmp_path / "run.html"
    assert main(["report", str(run), "--out", str(html)]) == 0
    found = open_in_browser(html)
    _assert_clean(found, html)
    assert "Training curves" in found["text"] and "resnet18" in found["text"]
    assert "Best epoch 2" in found["text"]


def test_report_refuses_what_it_cannot_read(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r.html")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r.html")]) == 2
    assert "not a train run" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "empty")]) == 2
    assert "is a folder" in capsys.readouterr().err
