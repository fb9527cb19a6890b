"""Benchmark: ``fdflare serve`` over a simulated year of hourly cycles, and its API under load.

1. **cycles**: the service's real cycle (closest JP2 of a local archive decoded with its
   geometry, the model, the store's insert, the dashboard's PNG, the flare list and the
   verification every ``--verify-every`` of simulated time: ``serve --replay`` verifies daily) over ``--days`` of hourly
   cycles on the replay clock. The JP2 files are ``--days-jp2`` days of the synthetic Sun
   (``synth --jp2``), reused cyclically (the cycle at ``t`` reads the file of ``t`` modulo
   that span, dated ``t``), and the flare catalog is theirs repeated the same way; the model
   is an untrained ``smallcnn`` at ``--image-size`` (the numbers measure the service, not a
   forecast). After ``--full-days`` the cycles re-date the last forecast instead of decoding
   and predicting (everything else as before), so that a year fills the store in minutes:
   the table gives both rates.
2. **verification**: one verification of the whole store (as after every live cycle).
3. **API**: ``fdflare serve`` started on the filled store (the replay done, so it only
   serves), then ``--clients`` concurrent keep-alive clients (asyncio, one process) each
   making ``--requests`` requests to each endpoint in turn, one every ``--every`` seconds
   (paced: dashboards and pollers), then back to back (saturation); p50 and p99 latency per
   endpoint, the whole request as the client sees it. Client and server share the cores.

usage: python benchmarks/bench_serve.py [--days 365] [--full-days 7] [--days-jp2 3]
       [--clients 50] [--requests 20] [--every 1] [--image-size 32] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

T0 = pd.Timestamp("2011-01-01T00:00")
#: wall seconds of the last load of each path
WALL: dict[str, float] = {}


def setup(root: Path, days_jp2: int, days: int, size: int) -> dict[str, Path]:
    """The synthetic archive, a year's catalog, an untrained model and its ensemble.json."""
    import json

    import torch

    from fdflare.acquire.catalog import read_catalog, write_catalog
    from fdflare.models.networks import create_model
    from fdflare.synth.config import SynthConfig, last_image_time
    from fdflare.synth.writer import generate

    sun = root / "sun"
    end = last_image_time(str(T0), str(T0 + pd.Timedelta(days=days_jp2)), "1h")
    config = SynthConfig(start=str(T0), end=end, cadence="1h", size=size, jp2=True, jp2_size=64)
    generate(sun, config, progress=False)
    cat = read_catalog(sun / "catalog.csv")
    cat = cat[cat["start_time"] < T0 + pd.Timedelta(days=days_jp2)]
    reps = -(-days // days_jp2) + 2
    year = pd.concat(
        [
            cat.assign(start_time=cat["start_time"] + k * pd.Timedelta(days=days_jp2))
            for k in range(reps)
        ]
    ).reset_index(drop=True)
    write_catalog(year, root / "catalog.csv")
    torch.manual_seed(0)
    net = create_model("smallcnn", pretrained=False)
    torch.save(net.state_dict(), root / "model.pth")
    (root / "ensemble.json").write_text(json.dumps({"format": 1, "members": [
        {"model": "smallcnn", "fold": 1, "checkpoint": "model.pth", "calibration": None}]}))  # fmt: skip
    return {"sun": sun, "catalog": root / "catalog.csv", "ensemble": root / "ensemble.json",
            "model": root / "model.pth"}  # fmt: skip


def cyclic_archive(root: Path, span: pd.Timedelta):
    """A LocalArchive whose cycle ``t`` reads the file of ``t`` modulo ``span``, dated ``t``."""
    from fdflare.forecast.archive import LocalArchive

    class Cyclic(LocalArchive):
        def closest(self, t: pd.Timestamp):
            shifted = T0 + (pd.Timestamp(t) - T0) % span
            found = super().closest(shifted)
            return None if found is None else (found[0], found[1] - shifted + pd.Timestamp(t))

    return Cyclic(root)


def run_cycles(
    paths: dict[str, Path],
    store: Path,
    days: int,
    full_days: int,
    days_jp2: int,
    size: int,
    verify_every: str = "1D",
) -> dict:
    """Phase 1: the replay's cycles in-process (the service's own code, no HTTP).

    The first ``full_days`` run the whole cycle; after them each cycle re-dates the last
    forecast instead of decoding and predicting (the rest of the cycle unchanged), so a
    year of forecasts fills the store in minutes.
    """
    from dataclasses import replace

    from fdflare.core.recipe import assumed_study
    from fdflare.forecast.service import load_members, run_forecast
    from fdflare.serve.flarelist import CatalogSource
    from fdflare.serve.run import prepare

    members = load_members([paths["model"]], model="smallcnn", image_size=size)
    end = T0 + pd.Timedelta(days=days) - pd.Timedelta(hours=1)
    switch = T0 + pd.Timedelta(days=full_days)
    archive = cyclic_archive(paths["sun"] / "jp2", pd.Timedelta(days=days_jp2))
    marks: dict[str, float] = {}
    last: list = []
    clock_box: list = []

    def forecaster(cycle: pd.Timestamp):
        if cycle < switch:
            fc = run_forecast(members, requested=cycle, base_urls=(), tolerance=pd.Timedelta(minutes=30),
                              accelerator="cpu", now=clock_box[0], archive=archive,
                              recipe=assumed_study())  # fmt: skip
            last[:] = [fc]
            return fc
        marks.setdefault("switch", time.perf_counter())
        fc = last[0]
        obs = replace(fc.observation, time=cycle)
        return replace(fc, requested_time=cycle, observation=obs, issue_time=clock_box[0]())

    svc = prepare(
        members=members, recipe=assumed_study(), store_path=store,
        flares=CatalogSource(paths["catalog"], start=T0), clock=lambda: T0,
        every=pd.Timedelta(hours=1), tolerance=pd.Timedelta(minutes=30), port=0,
        archive=archive, replay=(T0, end), verify_every=pd.Timedelta(verify_every),
        log=lambda m: None,
    )  # fmt: skip
    clock_box.append(svc.scheduler.clock)
    svc.scheduler.forecaster = forecaster
    t0 = time.perf_counter()
    svc.scheduler.run()
    t_end = time.perf_counter()
    n = svc.scheduler.cycles_run
    t1 = time.perf_counter()
    svc.scheduler.verify_now(force=True)  # once more, to time it alone
    verify_s = time.perf_counter() - t1
    for s in svc.stores:
        s.close()
    svc.sock.close()
    n_full = min(n, full_days * 24)
    t_switch = marks.get("switch", t_end)
    return {"cycles": n, "full": n_full, "full_s": t_switch - t0, "rest": n - n_full,
            "rest_s": t_end - t_switch, "verify_s": verify_s}  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


async def client(host: str, port: int, path: str, n: int, every: float, out: list[float]) -> None:
    """One keep-alive HTTP/1.1 client: ``n`` GETs, one each ``every`` seconds (0: back to back)."""
    import random

    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    start = loop.time() + random.uniform(0, every)
    try:
        for i in range(n):
            if every:
                await asyncio.sleep(max(0.0, start + i * every - loop.time()))
            t = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            out.append(time.perf_counter() - t)
            if status != 200:
                raise RuntimeError(f"{path}: HTTP {status}")
    finally:
        writer.close()


async def load(
    url: str, paths: list[str], clients: int, requests: int, every: float
) -> dict[str, list[float]]:
    """``clients`` concurrent clients, each making ``requests`` requests to each path in turn."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    times: dict[str, list[float]] = {p: [] for p in paths}
    for p in paths:  # warm the caches
        await client(host, int(port), p, 1, 0.0, [])
    for p in paths:
        t = time.perf_counter()
        await asyncio.gather(
            *(client(host, int(port), p, requests, every, times[p]) for _ in range(clients))
        )
        WALL[p] = time.perf_counter() - t
    return times


def serve_and_load(
    paths: dict[str, Path], store: Path, days: int, clients: int, requests: int, every: float
) -> dict:
    """Phase 3: ``fdflare serve`` on the filled store, and the clients."""
    end = T0 + pd.Timedelta(days=days) - pd.Timedelta(hours=1)
    err = store.with_suffix(".err")
    argv = [sys.executable, "-m", "fdflare", "serve", "--ensemble", str(paths["ensemble"]),
            "--image-size", "32", "--archive", str(paths["sun"] / "jp2"), "--catalog",
            str(paths["catalog"]), "--replay", f"{T0.isoformat()}..{end.isoformat()}",
            "--store", str(store), "--port", "0"]  # fmt: skip
    with open(err, "w") as fh:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=fh)
    try:
        url = None
        while url is None and proc.poll() is None:
            text = err.read_text()
            if "replay done" in text:
                url = text.split("listening on ")[1].split()[0]
            time.sleep(0.1)
        assert url, err.read_text()
        endpoints = ["/", "/api/latest", "/api/verification", "/api/health",
                     f"/api/forecasts?start={(end - pd.Timedelta(days=1)).isoformat()}"]  # fmt: skip
        times = {
            "paced": asyncio.run(load(url, endpoints, clients, requests, every)),
            "saturated": asyncio.run(load(url, endpoints[:2], clients, requests, 0.0)),
        }
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--days-jp2", type=int, default=3)
    ap.add_argument(
        "--full-days", type=int, default=7, help="days of whole cycles (model included)"
    )
    ap.add_argument("--verify-every", default="7D", help="simulated time between verifications")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--every", type=float, default=1.0, help="seconds between a client's requests")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_serve_"))
    root.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    paths = setup(root, args.days_jp2, args.days, args.image_size)
    setup_s = time.perf_counter() - t
    store = root / "forecasts.sqlite"
    for f in root.glob("forecasts.sqlite*"):
        f.unlink()
    cyc = run_cycles(paths, store, args.days, args.full_days, args.days_jp2, args.image_size,
                     args.verify_every)  # fmt: skip
    size_mb = sum(f.stat().st_size for f in root.glob("forecasts.sqlite*")) / 1e6
    times = serve_and_load(paths, store, args.days, args.clients, args.requests, args.every)
    cpus = len(os.sched_getaffinity(0))
    print(f"fdflare serve benchmark on {cpus} CPU core(s); setup (synth {args.days_jp2} days of "
          f"JP2, model) {setup_s:.0f} s")  # fmt: skip
    print()
    print("| what | value |")
    print("| --- | --- |")
    print(
        f"| hourly cycles run (replay clock, verification every {args.verify_every} simulated) | {cyc['cycles']} |"
    )
    print(f"| whole cycles per second (first {cyc['full']}: JP2 decode, {args.image_size} px "
          f"smallcnn, store, dashboard PNG) | {cyc['full'] / cyc['full_s']:.1f} |")  # fmt: skip
    if cyc["rest"]:
        print(f"| cycles per second without decode and model (the other {cyc['rest']}) | "
              f"{cyc['rest'] / cyc['rest_s']:.1f} |")  # fmt: skip
    print(f"| one verification of the whole store | {cyc['verify_s'] * 1000:.0f} ms |")
    print(f"| store size (SQLite, WAL included) | {size_mb:.1f} MB |")
    print()
    for mode, ts_by_path in times.items():
        print()
        if mode == "paced":
            print(f"{args.clients} concurrent clients, each one request every {args.every:g} s "
                  f"({args.clients / args.every:.0f} requests/s offered), {args.requests} each:")  # fmt: skip
        else:
            print(
                f"{args.clients} concurrent clients back to back (saturation), {args.requests} each:"
            )
        print()
        print("| endpoint | requests | p50 ms | p99 ms | requests/s |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for path, ts in ts_by_path.items():
            rate = "" if mode == "paced" else f"{len(ts) / WALL[path]:.0f}"
            print(
                f"| `{path}` | {len(ts)} | {percentile(ts, 50):.1f} | {percentile(ts, 99):.1f} | {rate} |"
            )


if __name__ == "__main__":
    main()
