"""The dashboard at ``/``: one self-contained page, drawn from the store.

Everything is inline (style, SVG charts, the magnetogram as a ``data:`` URI); the page has
no script and loads nothing, so a browser makes no request beyond the page itself. It
refreshes itself with ``<meta http-equiv="refresh">``. It shows:

* the current probability, the event (threshold and window from the forecast's recipe),
  the window, the observation and its age at the clock's ``now``, the flare history a
  history map read and the forecast's other notes;
* the magnetogram the forecast saw, with the limb and the circle 70 degrees from disk
  centre (the study's near-limb boundary) drawn from the file's disk geometry, and the
  attribution map when the cycle made one;
* the probability over the last 30 days, with the flares at or above the threshold marked;
* the rolling verification beside persistence and climatology, and the reliability diagram.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from fdflare.core.disk import NEAR_LIMB_DEG


def esc(value: Any) -> str:
    """Text escaped for HTML."""
    return html.escape("" if value is None else str(value), quote=True)


#: how far back the probability chart reaches
SPAN = pd.Timedelta(days=30)

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1b1f23; background: #f6f8fa; }
header { background: #0d1b2a; color: #fff; padding: .8em 1.5em; display: flex;
         justify-content: space-between; align-items: baseline; flex-wrap: wrap; gap: .5em; }
header h1 { font-size: 1.3em; margin: 0; }
header .meta { color: #b8c4d0; font-size: .9em; }
main { max-width: 76em; margin: 1em auto; padding: 0 1.5em; display: grid;
       grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 1em; }
@media (max-width: 60em) { main { grid-template-columns: minmax(0, 1fr); } }
section { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 1em 1.2em; }
section.wide { grid-column: 1 / -1; }
section.two { grid-column: span 2; }
@media (max-width: 60em) { section.two { grid-column: auto; } }
h2 { font-size: 1.05em; margin: 0 0 .6em; color: #24292f; }
.prob { font-size: 3.2em; font-weight: 700; margin: .1em 0; font-variant-numeric: tabular-nums; }
.event { font-size: 1.05em; color: #24292f; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; margin: .8em 0 0; }
dt { color: #57606a; } dd { margin: 0; font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; width: 100%; }
th, td { border-bottom: 1px solid #d0d7de; padding: .3em .5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f6f8fa; }
ul.plain { margin: 0; padding-left: 1.1em; }
tr.base td { color: #57606a; }
.ok { color: #116329; } .bad { color: #b3261e; } .muted { color: #57606a; font-size: .9em; }
.figs { display: flex; gap: 1em; flex-wrap: wrap; }
figure { margin: 0; } figcaption { color: #57606a; font-size: .85em; }
svg text { font: 11px system-ui, sans-serif; fill: #57606a; }
"""


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _age(delta: pd.Timedelta) -> str:
    from fdflare.forecast.service import format_age

    return format_age(delta)


def _t(text: str | None) -> pd.Timestamp | None:
    return None if not text else pd.Timestamp(str(text).rstrip("Z"))


def magnetogram_svg(png: bytes, geometry: dict[str, Any] | None, size: int = 300) -> str:
    """The magnetogram with the limb and the 70 degree circle over it, as inline SVG."""
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        w, h = im.size
    parts = [
        f'<svg viewBox="0 0 {w} {h}" width="{size}" height="{size}" role="img" '
        'aria-label="magnetogram">',
        f'<image href="{uri}" width="{w}" height="{h}"/>',
    ]
    if geometry:
        cx, cy, r = geometry["center_x"], geometry["center_y"], geometry["radius_px"]
        r70 = r * math.sin(math.radians(NEAR_LIMB_DEG))
        sw = max(w / size, 0.3)
        parts.append(
            f'<circle cx="{cx:.2f}" cy="{cy:.2f}" r="{r:.2f}" fill="none" stroke="#f2c14e" '
            f'stroke-width="{1.5 * sw:.2f}" class="limb"/>'
            f'<circle cx="{cx:.2f}" cy="{cy:.2f}" r="{r70:.2f}" fill="none" stroke="#4ec3f2" '
            f'stroke-width="{1.5 * sw:.2f}" stroke-dasharray="{4 * sw:.2f} {3 * sw:.2f}" class="c70"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def history_svg(
    points: Sequence[tuple[pd.Timestamp, float]],
    flares: pd.DataFrame,
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    threshold: str,
    width: int = 1000,
    height: int = 220,
) -> str:
    """The probability over ``[start, end]`` with the flares at or above ``threshold``."""
    left, right, top, bottom = 40, 10, 18, 26
    pw, ph = width - left - right, height - top - bottom
    span = max((end - start).total_seconds(), 1.0)

    def x(t: pd.Timestamp) -> float:
        return left + pw * (t - start).total_seconds() / span

    def y(p: float) -> float:
        return top + ph * (1 - p)

    out = [
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" '
        'aria-label="probability over the last 30 days" class="history">'
    ]
    for p in (0, 0.25, 0.5, 0.75, 1.0):
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(p):.1f}" y2="{y(p):.1f}" '
            f'stroke="#eaeef2"/><text x="{left - 6}" y="{y(p) + 4:.1f}" text-anchor="end">{p:g}</text>'
        )
    days = pd.date_range(start.ceil("D"), end, freq="7D")
    for d in days:
        out.append(
            f'<text x="{x(d):.1f}" y="{height - 8}" text-anchor="middle">{d:%Y-%m-%d}</text>'
        )
    for _, f in flares.iterrows():
        t = pd.Timestamp(f["start_time"])
        if start <= t <= end:
            out.append(
                f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{top + ph}" stroke="#d1242f" '
                f'stroke-width="1.5" opacity="0.55" class="flare"><title>{esc(f["goes_class"])} '
                f"{t:%Y-%m-%d %H:%M}</title></line>"
            )
    if points:
        path = " ".join(f"{x(t):.1f},{y(p):.1f}" for t, p in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="#0969da" stroke-width="1.6"/>')
    out.append(
        f'<text x="{width - right}" y="12" text-anchor="end">blue: P(forecast); red: flares '
        f"&gt;= {esc(threshold)} (start)</text></svg>"
    )
    return "".join(out)


def reliability_svg(bins: Sequence[dict[str, Any]], size: int = 260) -> str:
    """Observed frequency against forecast probability, per tenth, with the diagonal."""
    pad = 34
    inner = size - 2 * pad

    def px(v: float) -> float:
        return pad + inner * v

    def py(v: float) -> float:
        return size - pad - inner * v

    out = [
        f'<svg viewBox="0 0 {size} {size}" width="{size}" height="{size}" role="img" '
        'aria-label="reliability diagram" class="reliability">',
        f'<rect x="{pad}" y="{pad}" width="{inner}" height="{inner}" fill="none" stroke="#d0d7de"/>',
        f'<line x1="{px(0)}" y1="{py(0)}" x2="{px(1)}" y2="{py(1)}" stroke="#8c959f" '
        'stroke-dasharray="4 3"/>',
        f'<text x="{size / 2}" y="{size - 6}" text-anchor="middle">forecast probability</text>',
        f'<text x="10" y="{size / 2}" text-anchor="middle" transform="rotate(-90 10 {size / 2})">'
        "observed frequency</text>",
    ]
    for v in (0, 0.5, 1):
        out.append(f'<text x="{px(v)}" y="{size - pad + 14}" text-anchor="middle">{v:g}</text>')
        out.append(f'<text x="{pad - 5}" y="{py(v) + 4}" text-anchor="end">{v:g}</text>')
    pts = [(b["mean_prob"], b["observed"], b["n"]) for b in bins]
    if pts:
        out.append(
            '<polyline fill="none" stroke="#0969da" stroke-width="1.6" points="'
            + " ".join(f"{px(p):.1f},{py(o):.1f}" for p, o, _n in pts)
            + '"/>'
        )
        for p, o, n in pts:
            out.append(
                f'<circle cx="{px(p):.1f}" cy="{py(o):.1f}" r="3.5" fill="#0969da">'
                f"<title>{n} forecasts</title></circle>"
            )
    out.append("</svg>")
    return "".join(out)


def verification_table(v: dict[str, Any] | None) -> str:
    """The rolling verification: model, persistence, climatology, counts."""
    if not v:
        return '<p class="muted">no verification yet (the first flare list comes with a cycle)</p>'
    scores = v.get("scores") or {}
    counts = (
        f'<p class="muted">{v.get("verified", 0)} verified, {v.get("pending", 0)} pending '
        f"(window not yet covered by the flare list), {v.get('uncovered', 0)} uncovered; "
        f"{v.get('events', 0)} events; as of {esc(v.get('at'))}</p>"
    )
    if not scores:
        return counts + '<p class="muted">nothing verified yet</p>'
    rows = []
    for kind in ("model", "persistence", "climatology"):
        s = scores.get(kind)
        if not s:
            continue
        rows.append(
            f'<tr class="{"model" if kind == "model" else "base"}" data-kind="{kind}"><td>{kind}</td>'
            f"<td>{s['n']}</td><td>{_fmt(s['tss'])}</td><td>{_fmt(s['hss2'])}</td>"
            f"<td>{_fmt(s['brier'])}</td><td>{_fmt(s['bss'])}</td></tr>"
        )
    clim = v.get("climatology")
    sure = ""
    diff = (v.get("difference_vs_persistence") or {}).get("tss") or {}
    if diff.get("mean") is not None:
        from fdflare.analysis.skill import difference_words

        sure = (
            '<p class="muted" id="how-sure">TSS against persistence: '
            f"{esc(difference_words(diff))}</p>"
        )
    return (
        "<table><thead><tr><th>forecast</th><th>n</th><th>TSS</th><th>HSS2</th><th>Brier</th>"
        "<th>BSS</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        + sure
        + counts
        + f'<p class="muted">climatology {_fmt(clim)} from {esc(v.get("climatology_source"))}; '
        "BSS is against it; TSS and HSS2 at probability 0.5</p>"
    )


def notes(v: dict[str, Any] | None) -> str:
    """How to read the verification, and the flare list's notes."""
    items = [
        "Each forecast is verified once its window has closed and the flare list covers it "
        "(and the window before it, for persistence); until then it is pending.",
        "TSS and HSS2: yes/no at probability 0.5; above persistence's is skill beyond "
        "&ldquo;tomorrow like today&rdquo;.",
        "BSS: the Brier score against climatology's; above 0 beats the base rate.",
    ]
    items += [esc(n) for n in (v or {}).get("notes", [])]
    return (
        '<section id="how"><h2>How to read it</h2><ul class="muted">'
        + "".join(f"<li>{i}</li>" for i in items)
        + "</ul></section>"
    )


def forecast_notes(notes: Sequence[str]) -> str:
    """The forecast's own notes: the flare history a history map read, then the others."""
    from fdflare.forecast.service import HISTORY_NOTE

    out = ""
    rest = []
    for n in notes:
        if n.startswith(HISTORY_NOTE):
            out += (
                f'<dt>flare history</dt><dd id="flare-history">{esc(n[len(HISTORY_NOTE) :])}</dd>'
            )
        else:
            rest.append(n)
    if rest:
        items = "".join(f"<li>{esc(n)}</li>" for n in rest)
        out += f'<dt>notes</dt><dd id="forecast-notes"><ul class="plain">{items}</ul></dd>'
    return out


def render(
    *,
    latest: dict[str, Any] | None,
    points: Sequence[tuple[pd.Timestamp, float]],
    flares: pd.DataFrame,
    verification: dict[str, Any] | None,
    image: tuple[bytes, dict[str, Any] | None, bytes | None] | None,
    now: pd.Timestamp,
    health: dict[str, Any],
    refresh_s: int = 60,
    title: str = "fdflare forecast service",
) -> str:
    """The dashboard page (see module doc)."""
    head = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{int(refresh_s)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
    )
    status = health.get("status", "")
    klass = {"ok": "ok", "replay done": "meta"}.get(status, "bad")
    top = (
        f'<header><h1>{esc(title)}</h1><span class="meta">clock {now:%Y-%m-%d %H:%M:%S} UTC · '
        f'<span class="{klass}" id="health">{esc(status)}</span> · last good cycle '
        f"{esc(health.get('last_good_cycle') or 'none')}</span></header><main>"
    )
    if latest is None:
        body = '<section class="wide"><h2>No forecast yet</h2><p>The first cycle has not issued one.</p></section>'
        return head + top + body + "</main></body></html>"
    from fdflare.core.recipe import Recipe

    recipe = Recipe.from_dict(latest["recipe"]) if latest.get("recipe") else None
    event = recipe.event if recipe else f"flare >= {latest.get('threshold')}"
    threshold = recipe.threshold if recipe else str(latest.get("threshold"))
    obs = _t(latest.get("observation_time"))
    age = "" if obs is None else _age(now - obs)
    current = (
        '<section id="current"><h2>Current forecast</h2>'
        f'<div class="event">P({esc(event)})</div>'
        f'<div class="prob" id="probability">{latest["probability"]:.3f}</div><dl>'
        f'<dt>window</dt><dd id="window">{esc(latest["window_start"])} to '
        f"{esc(latest['window_end'])}</dd>"
        f'<dt>observation</dt><dd id="observation">{esc(latest.get("observation_time"))}</dd>'
        f'<dt>its age</dt><dd id="age">{esc(age)}</dd>'
        f"<dt>issued</dt><dd>{esc(latest.get('issue_time'))} for cycle {esc(latest.get('cycle'))}</dd>"
        f"<dt>members</dt><dd>{len(latest.get('members') or []) or esc(latest.get('n_members', ''))}"
        f" (spread {_fmt(latest.get('spread'))})</dd>"
        + forecast_notes(latest.get("notes") or [])
        + "</dl></section>"
    )
    figs = ""
    if image is not None:
        png, geo, attribution = image
        figs = (
            '<figure id="magnetogram">'
            + magnetogram_svg(png, geo)
            + "<figcaption>the magnetogram; "
            + (
                f"yellow: limb, blue dashes: {NEAR_LIMB_DEG:g}&deg; from disk centre"
                if geo
                else "no disk geometry"
            )
            + "</figcaption></figure>"
        )
        if attribution:
            uri = "data:image/png;base64," + base64.b64encode(attribution).decode("ascii")
            figs += (
                f'<figure id="attribution"><img src="{uri}" width="300" alt="attribution map">'
                "<figcaption>attribution map (first member)</figcaption></figure>"
            )
    mag = f'<section><h2>Observation</h2><div class="figs">{figs or "<p class=muted>no image kept</p>"}</div></section>'
    hist = (
        '<section class="wide"><h2>Probability over the last 30 days</h2>'
        + history_svg(points, flares, now - SPAN, now, threshold=threshold)
        + "</section>"
    )
    ver = (
        '<section id="verification" class="two"><h2>Verification beside the baselines</h2>'
        + verification_table(verification)
        + "</section>"
    )
    rel = (
        "<section><h2>Reliability</h2>"
        + reliability_svg((verification or {}).get("reliability") or [])
        + "</section>"
    )
    return (
        head
        + top
        + current
        + mag
        + rel
        + hist
        + ver
        + notes(verification)
        + "</main></body></html>"
    )
