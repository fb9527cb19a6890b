"""``fdflare serve``: the operational forecast service (scheduler, verification, API, dashboard)."""

from __future__ import annotations

import argparse
import os
from typing import Any

HELP = "run the forecast service: a forecast every cycle, live verification, HTTP API and dashboard"
DESCRIPTION = """\
Issue a forecast every --every (aligned to the clock: whole hours for 1h) into --store
(SQLite), fetch the flare list each cycle (SWPC's GOES X-ray flares, or --catalog with
--replay) and verify every window that has closed beside persistence and climatology, and
serve a read-only HTTP API with a dashboard at / (loopback by default).

After downtime the missed cycles are caught up, oldest first, at most --catch-up of them;
no cycle is ever issued twice. An outage of Helioviewer or of the flare list fails that
cycle with its reason and the service goes on. SIGTERM finishes the cycle in flight and
closes the store; a restart resumes where it stopped.

--replay START..END runs past cycles from --archive (a JP2 tree) on a clock of its own,
verified against --catalog; --demo OUT does that for the folder of `fdflare demo`.

exit status: 0 stopped by SIGTERM/SIGINT; 2 bad arguments or input (a bad ensemble, a
store that cannot be written); 3 the port cannot be bound, or the scheduler stopped on an
error it cannot go on from (the store became unwritable).

examples:
  fdflare serve --ensemble cv/ensemble.json --store forecasts.sqlite --tolerance 3h
  fdflare demo --out demo && fdflare serve --demo demo
  fdflare serve --ensemble demo/ensemble.json --archive demo/synth/jp2 \\
      --catalog demo/synth/catalog.csv --replay 2011-01-01..2011-12-31 --every 12h \\
      --store demo/serve/forecasts.sqlite
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of ``fdflare serve``."""
    from fdflare.analysis.attribution import METHODS
    from fdflare.commands._common import (
        add_accelerator_option,
        add_http_options,
        add_model_options,
        add_rebin_option,
        nonnegative_float,
        positive_int,
        probability,
    )

    src = p.add_argument_group("the models")
    src.add_argument("--ensemble", metavar="FILE", help="ensemble.json of `fdflare cv` or `demo`")
    src.add_argument(
        "--checkpoint", action="extend", nargs="+", metavar="FILE",
        help="member checkpoints (several make an ensemble)",
    )  # fmt: skip
    add_model_options(p)
    p.add_argument(
        "--calibration",
        metavar="FILE",
        help="a map applied to the members' mean; a history map (`calibrate --method "
        "history`) reads the flares of the 72 h up to each observation from the flare list",
    )
    p.add_argument(
        "--store", metavar="FILE", help="the forecast store (SQLite; created if missing)"
    )
    p.add_argument(
        "--every", default="1h", metavar="DURATION", help="cycle length (default %(default)s)"
    )
    p.add_argument(
        "--catch-up", type=positive_int, default=24, metavar="N",
        help="most missed cycles run after downtime (default %(default)s)",
    )  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="port (default %(default)s; 0: any free)")
    obs = p.add_argument_group("the observations")
    obs.add_argument(
        "--base-url", action="append", metavar="URL",
        help="Helioviewer API base URL, again for mirrors (default as `fdflare forecast`)",
    )  # fmt: skip
    obs.add_argument("--archive", metavar="DIR", help="a local JP2 tree instead of Helioviewer")
    obs.add_argument(
        "--jsoc-fallback", action="store_true",
        help="when Helioviewer fails or holds no observation within --tolerance, take the "
        "closest good record of JSOC's near-real-time series (hmi.M_720s_nrt); needs --email",
    )  # fmt: skip
    obs.add_argument(
        "--jsoc-url", metavar="URL",
        help="JSOC's address for --jsoc-fallback (default $FDFLARE_JSOC_URL, else JSOC)",
    )  # fmt: skip
    obs.add_argument(
        "--email", metavar="ADDRESS",
        help="the address registered at JSOC for exports (--jsoc-fallback; default $JSOC_EMAIL)",
    )  # fmt: skip
    add_rebin_option(obs, "--jsoc-rebin", goes_with="--jsoc-fallback", what="its record")
    obs.add_argument(
        "--tolerance", default="12min",
        help="largest distance between a cycle and its observation (default %(default)s)",
    )  # fmt: skip
    fl = p.add_argument_group("the flare list")
    fl.add_argument(
        "--flare-list", choices=("swpc", "hek"), default="swpc",
        help="the live flare list: swpc (SWPC's GOES X-ray flare JSON) or hek (HEK's GOES "
        "flares) (default %(default)s)",
    )  # fmt: skip
    fl.add_argument(
        "--flare-list-url", metavar="URL",
        help="the flare list's address (default: for swpc $FDFLARE_SWPC_URL, else SWPC's "
        "7-day list; for hek $FDFLARE_HEK_URL, else HEK's public API)",
    )  # fmt: skip
    fl.add_argument(
        "--catalog", metavar="FILE", help="a catalog file as the flare list (with --replay)"
    )
    fl.add_argument(
        "--climatology", type=probability, metavar="RATE",
        help="the climatology rate of the verification (default: from the flare list)",
    )  # fmt: skip
    rp = p.add_argument_group("replay")
    rp.add_argument("--replay", metavar="START..END", help="run past cycles on a clock of its own")
    rp.add_argument(
        "--pace", type=nonnegative_float, default=0.0, metavar="SECONDS",
        help="real seconds between replayed cycles (default %(default)s)",
    )  # fmt: skip
    rp.add_argument(
        "--demo", metavar="OUT",
        help="replay the year of `fdflare demo --out OUT` (its ensemble, JP2 files, catalog)",
    )  # fmt: skip
    p.add_argument(
        "--method-name", default=None, metavar="NAME", help="the scoreboard's method name"
    )
    p.add_argument(
        "--explain-method", default=None, metavar="METHOD", choices=METHODS,
        help="each cycle also makes the first member's attribution map with METHOD for the "
        "dashboard (gradcam is the quickest; needs the explain extra; default: no maps)",
    )  # fmt: skip
    add_accelerator_option(p, default="cpu", help="where the members run")
    add_http_options(p, retries=2)
    p.add_argument("--clock", help=argparse.SUPPRESS)  # a file holding the time (tests)


def _check(args: argparse.Namespace) -> dict[str, Any]:
    """Validate every option before any work."""
    from pathlib import Path

    import pandas as pd

    from fdflare.core.errors import InputError, UsageError
    from fdflare.core.timeparse import option_duration

    out: dict[str, Any] = {}
    if args.demo:
        from fdflare.serve.replay import demo_layout

        if args.ensemble or args.checkpoint or args.archive or args.catalog:
            raise UsageError("--demo OUT names the ensemble, archive and catalog itself")
        layout = demo_layout(args.demo)
        args.ensemble, args.archive, args.catalog = (
            str(layout.ensemble), str(layout.archive), str(layout.catalog),
        )  # fmt: skip
        args.store = args.store or str(layout.store)
        Path(args.store).parent.mkdir(parents=True, exist_ok=True)
        if args.replay is None:
            out["replay"] = (layout.start, layout.end)
        if args.every == "1h":
            args.every = f"{int(layout.cadence.total_seconds())}s"
        if args.tolerance == "12min":
            args.tolerance = f"{int(layout.cadence.total_seconds()) // 2}s"
    if bool(args.checkpoint) == bool(args.ensemble):
        raise UsageError(
            "give --checkpoint FILE... or --ensemble FILE (one of them), or --demo OUT"
        )
    if not args.store:
        raise UsageError("give --store FILE (the forecast store, SQLite)")
    from fdflare.commands._common import require_inputs

    # before the store's lock and torch: missing inputs, and an ensemble naming a missing
    # member, are refused at once and leave nothing behind
    require_inputs(
        checkpoint=args.checkpoint, ensemble=args.ensemble, calibration=args.calibration,
        catalog=args.catalog,
    )  # fmt: skip
    if args.ensemble:
        from fdflare.forecast.ensemble import read_ensemble

        read_ensemble(args.ensemble)
    every = pd.Timedelta(option_duration(args.every, "--every"))
    if every < pd.Timedelta(minutes=1):
        raise UsageError(f"--every {args.every}: at least 1min")
    out["every"] = every
    out["tolerance"] = pd.Timedelta(option_duration(args.tolerance, "--tolerance"))
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: 0 to 65535")
    if args.replay:
        from fdflare.serve.replay import parse_range

        try:
            out["replay"] = parse_range(args.replay)
        except InputError as exc:
            raise UsageError(exc.message) from None
    if "replay" in out and not args.archive:
        raise UsageError("--replay runs from a local archive: give --archive DIR")
    if args.catalog and "replay" not in out:
        raise UsageError("--catalog is the flare list of a --replay (live: SWPC's list)")
    if "replay" in out and not args.catalog:
        raise UsageError("--replay verifies against a catalog file: give --catalog FILE")
    if (args.jsoc_url or args.email or args.jsoc_rebin is not None) and not args.jsoc_fallback:
        raise UsageError("--jsoc-url, --email and --jsoc-rebin go with --jsoc-fallback")
    if args.jsoc_fallback:
        if args.archive:
            raise UsageError("--jsoc-fallback backs up Helioviewer: not with --archive")
        from fdflare.forecast.jsoc_source import JsocSource

        try:
            out["fallback"] = JsocSource(
                base_url=args.jsoc_url, email=args.email, tolerance=out["tolerance"],
                rebin=args.jsoc_rebin or 1, rebin_option="--jsoc-rebin",
            )  # fmt: skip
        except InputError as exc:
            flag = "--email" if exc.field in ("email", "--email") else "--jsoc-url"
            raise UsageError(f"{flag}: {exc.message}") from None
    if args.archive and not Path(args.archive).is_dir():
        raise UsageError(f"--archive {args.archive}: not a folder")
    store = Path(args.store)
    if store.is_dir():
        raise UsageError(f"--store {store}: a folder, not a file")
    if not store.parent.is_dir():
        raise UsageError(f"--store {store}: no folder {store.parent}")
    if args.base_url or os.environ.get("FDFLARE_HELIOVIEWER_URL") or not args.archive:
        from fdflare.acquire.helioviewer.client import BASE_URL_ENV, resolve_base_url
        from fdflare.forecast.service import DEFAULT_BASE_URLS

        urls = args.base_url or (
            [os.environ[BASE_URL_ENV]] if os.environ.get(BASE_URL_ENV) else list(DEFAULT_BASE_URLS)
        )
        try:
            out["base_urls"] = [resolve_base_url(u, option="--base-url") for u in urls]
        except InputError as exc:
            raise UsageError(f"--base-url: {exc.message}") from None
    if args.catalog and (args.flare_list_url or args.flare_list != "swpc"):
        raise UsageError("--catalog is the flare list of a replay: not with --flare-list(-url)")
    if not args.catalog:
        if args.flare_list == "hek":
            from fdflare.acquire.hek import DEFAULT_HEK_URL

            default = os.environ.get("FDFLARE_HEK_URL") or DEFAULT_HEK_URL
        else:
            from fdflare.acquire.swpc import SWPC_FLARES_URL

            default = os.environ.get("FDFLARE_SWPC_URL") or SWPC_FLARES_URL
        url = args.flare_list_url or default
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--flare-list-url {url}: an http(s) URL")
        out["flare_list_url"] = url
    if args.method_name is not None:
        from fdflare.forecast.formats import check_method_name

        check_method_name(args.method_name)
    return out


def run(args: argparse.Namespace) -> int:
    """Check, lock the store, bind the port, load the members, open the store, then serve."""
    import signal
    import threading
    from pathlib import Path

    from fdflare.forecast import service
    from fdflare.serve.run import bind, service_lock

    opts = _check(args)
    clock: Any = service.utcnow
    if args.clock:
        from fdflare.serve.replay import FileClock

        clock = FileClock(args.clock)
    # SIGTERM before serving (while the models load) stops as Ctrl-C does: the lock and
    # the port are released and a lock file with no store beside it removed; once serving,
    # the service's own handler finishes the cycle in flight instead
    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGTERM, _interrupt)
    try:
        # the store's lock and the port before the models load: a store taken by another
        # service, a folder that cannot be written and a port in use are refused at once
        with service_lock(Path(args.store)):
            # bound, not yet listening: a busy port fails here, and no client connects to a
            # service still loading its models (the server listens once it runs)
            sock = bind(args.host, args.port, listen=False)
            try:
                return _load_and_serve(args, opts, clock, sock)
            finally:
                sock.close()  # a no-op once the server has closed it
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def _load_and_serve(args: argparse.Namespace, opts: dict[str, Any], clock: Any, sock: Any) -> int:
    from fdflare.commands._common import load_members_and_map
    from fdflare.core.http import HttpPolicy
    from fdflare.forecast import service
    from fdflare.serve import flarelist

    members, cal = load_members_and_map(args, history_from="the flare list")
    recipe = service.members_recipe(members)
    if args.explain_method:
        from fdflare.analysis.explain import check_explain_available

        check_explain_available()
    policy = HttpPolicy(
        retries=args.retries, connect_timeout=args.connect_timeout,
        read_timeout=args.read_timeout, concurrency=1,
    )  # fmt: skip
    if args.catalog:
        start = replay[0] if (replay := opts.get("replay")) else None
        flares: Any = flarelist.CatalogSource(args.catalog, start=start)
    elif args.flare_list == "hek":
        flares = flarelist.HekSource(opts["flare_list_url"], policy=policy)
    else:
        flares = flarelist.SwpcSource(opts["flare_list_url"], policy=policy)
    replay = opts.get("replay")
    return _serve(args, opts, members, recipe, flares, clock, policy, cal, replay, sock)


def _serve(
    args: argparse.Namespace,
    opts: dict[str, Any],
    members: list[Any],
    recipe: Any,
    flares: Any,
    clock: Any,
    policy: Any,
    cal: Any,
    replay: Any,
    sock: Any,
) -> int:
    import pandas as pd

    from fdflare.forecast.archive import LocalArchive
    from fdflare.serve.run import prepare

    svc = prepare(
        members=members,
        recipe=recipe,
        store_path=args.store,
        flares=flares,
        clock=clock,
        every=opts["every"],
        tolerance=opts["tolerance"],
        sock=sock,
        base_urls=opts.get("base_urls", ()),
        archive=LocalArchive(args.archive) if args.archive else None,
        fallback=opts.get("fallback"),
        policy=policy,
        calibration=cal,
        catch_up=args.catch_up,
        replay=replay,
        pace=args.pace,
        verify_every=max(opts["every"], pd.Timedelta("1D")) if replay else None,
        climatology=args.climatology,
        method_name=args.method_name or f"fdflare_{members[0].loaded.model}",
        accelerator=args.accelerator,
        explain=args.explain_method,
    )
    return int(svc.serve())
