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
            # every figure as laid out: alt text and box, and the width text may take
            found["boxes"] = page.evaluate(
                "Array.from(document.images).map(i => { const r = i.getBoundingClientRect();"
                " return {alt: i.alt, x: r.left, y: r.top, w: r.width, h: r.height,"
                " natural: i.naturalWidth}; })"
            )
            found["text_width"] = page.evaluate(
                "document.querySelector('h1').getBoundingClientRect().width"
            )
            found["tables"] = page.evaluate(
                "Array.from(document.querySelectorAll('table')).map(t =>"
                " Array.from(t.rows).map(r => Array.from(r.cells).map(c => c.innerText)))"
            )
            found["code"] = page.evaluate(
                "Array.from(document.querySelectorAll('p code')).map(c => c.innerText)"
            )
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


def _text_table(printed: str, first: str) -> list[list[str]]:
    """The aligned text table starting at the line ``first`` begins with, cut at its dashes."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    spans = [m.span() for m in re.finditer(r"-+", lines[start + 1])]
    rows = []
    for line in [lines[start], *lines[start + 2 :]]:
        if not line.strip():
            break
        rows.append([line[a:b].strip() for a, b in spans])
    return rows


def _write_class_files(folder: Path) -> list[Path]:
    """X- and M-class tables as the study released them, with unknown and off-grid locations."""
    import numpy as np

    rng = np.random.default_rng(3)
    folder.mkdir(parents=True)
    paths = []
    for cls in ("x", "m"):
        lines = ["timestamp,flare_prob,goes_class,fl_location,flare_start"]
        for i in range(40):
            day = 1 + i % 28
            stamp = f"2011/02/{day:02d}/HMI.m2011.02.{day:02d}_{i % 24:02d}.00.00.jpg"
            lon, lat = rng.uniform(-89, 89), rng.uniform(-30, 30)
            loc = "" if i % 13 == 5 else f'"({lon:.3f}, {50 if i % 11 == 3 else lat:.3f})"'
            goes = "C5.0" if (cls, i) == ("m", 7) else f"{cls.upper()}{rng.integers(1, 9)}.0"
            lines.append(f"{stamp},{rng.uniform():.4f},{goes},{loc},2011-02-{day:02d} 03:00:00")
        path = folder / f"tiny_{cls}_class.csv"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def test_location_table_and_heatmaps_in_the_page_as_spatial_prints_them(tmp_path, capsys):
    files = _write_class_files(tmp_path / "ref" / "predictions")
    assert main(["spatial", *map(str, files)]) == 0
    printed = capsys.readouterr().out
    cli = _text_table(printed, "class ")
    assert [r[0] for r in cli[1:]] == ["X", "X", "M", "M", "X+M", "X+M"]
    assert cli[0][-2:] == ["unknown loc.", "outside grid"] and cli[1][-2:] != ["", ""]
    out = tmp_path / "repro"
    assert main(["reproduce", "--reference", str(tmp_path / "ref"), "--out", str(out)]) == 0
    capsys.readouterr()
    found = open_in_browser(out / "report.html", tmp_path / "shot.png")
    _assert_clean(found, out / "report.html")
    # the same rows and columns as the CLI, cell for cell
    (html_table,) = [t for t in found["tables"] if t and t[0][:2] == ["class", "location"]]
    assert html_table == cli
    # and the same note on what was left out
    assert "1 instance(s) with a largest flare below M were left out" in printed
    assert "1 instance(s) with a largest flare below M were left out" in found["text"]
    # each heatmap takes the whole text width, drawn at least that wide (never blown up)
    heat = [b for b in found["boxes"] if "heatmap" in b["alt"]]
    assert [b["alt"] for b in heat] == ["tiny_heatmap_X", "tiny_heatmap_M", "tiny_heatmap_XM"]
    width = found["text_width"]
    assert width > 900
    for box in heat:
        assert abs(box["w"] - width) <= 2 and box["natural"] >= box["w"], (box, width)
        assert box["h"] > 0.35 * box["w"]  # the map, not a strip of margin


def test_curves_lay_out_as_a_regular_grid(tmp_path, capsys):
    folder = tmp_path / "cv"
    folder.mkdir()
    (folder / "cv_summary.csv").write_text(
        "run,val_tss\n" + "".join(f"f{k},0.{k}\n" for k in range(1, 5))
    )
    for k in range(1, 5):
        run = folder / f"smallcnn_fold{k}"
        run.mkdir()
        (run / "metrics.csv").write_text(
            "epoch,train_loss,val_loss,val_tss,val_hss2\n"
            + "".join(
                f"{e},{0.7 - e * 0.05:.2f},{0.7 - e * 0.02:.2f},0.{e},0.{e}\n" for e in range(4)
            )
        )
    html = tmp_path / "cv.html"
    assert main(["report", str(folder), "--out", str(html)]) == 0
    found = open_in_browser(html)
    _assert_clean(found, html)
    curves = [b for b in found["boxes"] if "per epoch" in b["alt"]]
    assert len(curves) == 4
    # two columns, two rows, every curve the same size
    assert len({round(b["x"]) for b in curves}) == 2 and len({round(b["y"]) for b in curves}) == 2
    assert len({(round(b["w"]), round(b["h"])) for b in curves}) == 1, curves
    assert 2 * curves[0]["w"] > 0.9 * found["text_width"]


def test_backticked_text_is_code_on_the_page(tmp_path):
    from fdflare.reports.html import Page

    page = Page("notes")
    page.paragraph("caution: rerun with `fdflare demo --protocol honest` to compare", "note")
    page.paragraph("a lone ` stays as typed")
    html = tmp_path / "p.html"
    html.write_text(page.render())
    found = open_in_browser(html)
    assert found["code"] == ["fdflare demo --protocol honest"]
    assert "rerun with fdflare demo --protocol honest to compare" in found["text"]
    assert "a lone ` stays as typed" in found["text"]
