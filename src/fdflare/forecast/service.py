"""One forecast: the magnetogram closest to a time, every member, their (calibrated) mean.

:func:`run_forecast` is ``fdflare forecast``:

1. every member is loaded before anything is fetched (a checkpoint that does not load is
   an error before the first request);
2. Helioviewer is asked for the HMI magnetogram closest to the requested time, through the
   downloader's client (:class:`~fdflare.acquire.helioviewer.client.HelioviewerClient`: the
   one HTTP policy's timeouts, retries with back-off and ``Retry-After``). Each base URL is
   tried in turn: when one cannot be reached or answers garbage after its retries, the next
   (a mirror) is asked;
3. the observation must lie within the tolerance of the requested time, else nothing is
   forecast and the error names the closest observation;
4. its JPEG 2000 file is fetched to a temporary folder, decoded at reduced resolution with
   its disk geometry (:func:`fdflare.prepare.decode.decode_with_geometry`) and removed;
5. each member predicts it, its probability goes through its own calibration map when the
   ensemble carries one, and the forecast is the mean (optionally through one more map).

With a local archive (:class:`~fdflare.forecast.archive.LocalArchive`, ``--archive``)
instead of Helioviewer, steps 2 and 4 read the archive's closest file in place; with JSOC's
near-real-time series (:class:`~fdflare.forecast.jsoc_source.JsocSource`, ``--source
jsoc-nrt``) the closest good record is exported and its FITS decoded the same way.

The forecast is for the event its members were trained for (their label recipe,
:mod:`fdflare.core.recipe`: a GOES class threshold and a window), and its window is that
label window after the observation the models saw (an image at ``t`` is labelled with the
flares starting in ``(t, t + window)``). Members trained for different events are refused;
a model that records no recipe is taken as the study's (>= M1.0 in 24 h), and says so.

Errors and their exit statuses: bad arguments, a checkpoint that does not load or a
requested time in the future: 2 (:class:`~fdflare.core.errors.InputError`); the service
down or answering garbage on every base URL: 3 (:class:`ServiceError`); no observation
within the tolerance: 4 (:class:`NoObservationError`).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fdflare.core.errors import EXIT_NO_DATA, FdflareError, InputError, RunError
from fdflare.core.recipe import Recipe, assumed_study

#: how far ahead of the clock a requested time may lie (clock skew), before it is refused
FUTURE_SLACK = pd.Timedelta(minutes=1)
#: the public API, then the IAS mirror
DEFAULT_BASE_URLS = ("https://api.helioviewer.org/v2/", "https://helioviewer-api.ias.u-psud.fr/v2/")


class ServiceError(RunError):
    """Every base URL was down, or answered garbage, after the retries (exit status 3)."""


class NoObservationError(FdflareError):
    """No observation within the tolerance of the requested time (exit status 4)."""

    exit_status = EXIT_NO_DATA


def utcnow() -> pd.Timestamp:
    """The current time, UTC, timezone-naive (the clock of ``--time now``; tests replace it)."""
    return pd.Timestamp(datetime.now(timezone.utc).replace(tzinfo=None))


def iso(t: pd.Timestamp) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ``."""
    return pd.Timestamp(t).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_age(delta: pd.Timedelta) -> str:
    """A signed duration as people write it: ``12 min``, ``2 h 05 min``, ``40 s``."""
    seconds = round(abs(delta.total_seconds()))
    sign = "-" if delta < pd.Timedelta(0) else ""
    if seconds < 60:
        return f"{sign}{seconds} s"
    hours, rest = divmod(seconds, 3600)
    minutes = rest // 60
    return f"{sign}{hours} h {minutes:02d} min" if hours else f"{sign}{minutes} min"


@dataclass
class Member:
    """One model of the forecast: its checkpoint, network and optional calibration map."""

    checkpoint: str
    loaded: Any  # fdflare.inference.predict.LoadedModel
    calibration: Any = None  # fdflare.analysis.calibration.Calibrator or None
    raw_probability: float | None = None
    probability: float | None = None
    #: the cross-validation fold of an ensemble.json member (None when not known)
    fold: int | None = None


#: how the note of the flare history a history map read begins
HISTORY_NOTE = "flare history up to the observation: "

#: the flares up to an observation time, and notes on them (``serve``'s flare list)
FlaresUpTo = Callable[[pd.Timestamp], tuple[pd.DataFrame, list[str]]]


@dataclass
class Observation:
    """The magnetogram a forecast was made from."""

    #: the base URL it came from, or ``archive:/abs/root`` for a local archive
    source: str
    #: Helioviewer's image id, or the file's path relative to the archive's root
    image_id: str
    time: pd.Timestamp
    images: dict[int, np.ndarray] = field(default_factory=dict)  # size -> uint8 image
    geometry: dict[int, dict[str, Any] | None] = field(default_factory=dict)  # size -> geometry
    notes: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str | None:
        """The Helioviewer base URL, or None for a local archive."""
        return self.source if self.source.startswith(("http://", "https://")) else None


@dataclass
class Forecast:
    """A forecast: P(event in the window) of its recipe, and how it was made."""

    probability: float
    requested_time: pd.Timestamp
    observation: Observation
    members: list[Member]
    calibrated: bool
    issue_time: pd.Timestamp
    #: the event the members were trained for (threshold and window)
    recipe: Recipe = field(default_factory=assumed_study)
    #: the flare history a history map read (:data:`fdflare.analysis.history.FEATURES`)
    flare_history: dict[str, float] | None = None

    @property
    def window_start(self) -> pd.Timestamp:
        """Start of the window: the observation time."""
        return self.observation.time

    @property
    def window_end(self) -> pd.Timestamp:
        """End of the window (excluded): the observation time plus the recipe's window."""
        return self.observation.time + self.recipe.window_delta

    @property
    def age(self) -> pd.Timedelta:
        """How old the observation was at the requested time."""
        return self.requested_time - self.observation.time

    @property
    def spread(self) -> float:
        """Standard deviation of the members' probabilities (0 for one member)."""
        probs = [m.probability for m in self.members if m.probability is not None]
        return float(np.std(probs)) if len(probs) > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` object."""
        return {
            "probability": round(self.probability, 6),
            "event": self.recipe.event,
            "threshold": self.recipe.threshold,
            "window_hours": self.recipe.window_hours,
            "recipe": self.recipe.to_dict(),
            "recipe_assumed": self.recipe.assumed,
            "requested_time": iso(self.requested_time),
            "issue_time": iso(self.issue_time),
            "observation_time": iso(self.observation.time),
            "observation_age_s": round(self.age.total_seconds()),
            "window_start": iso(self.window_start),
            "window_end": iso(self.window_end),
            "source": {
                "name": self.observation.source,
                "base_url": self.observation.base_url,
                "image_id": self.observation.image_id,
                "instrument": "SDO/HMI line-of-sight magnetogram",
            },
            "calibrated": self.calibrated,
            "spread": round(self.spread, 6),
            "members": [
                {
                    "checkpoint": m.checkpoint,
                    "model": m.loaded.model,
                    "probability": None if m.probability is None else round(m.probability, 6),
                    "raw_probability": None
                    if m.raw_probability is None
                    else round(m.raw_probability, 6),
                    "calibrated": m.calibration is not None,
                }
                for m in self.members
            ],
            "flare_history": None
            if self.flare_history is None
            else {k: round(v, 6) for k, v in self.flare_history.items()},
            "notes": list(self.observation.notes),
        }


def parse_requested_time(text: str, *, now: pd.Timestamp) -> pd.Timestamp:
    """``now`` or an ISO time (UTC), floored to the second; a time in the future is refused.

    Raises:
        InputError: not a time, or later than ``now`` (plus a minute of clock skew).
    """
    from fdflare.core.timeparse import parse_time

    if text.strip().lower() == "now":
        return pd.Timestamp(now).floor("s")
    t = parse_time(text, name="--time").floor("s")
    if t > now + FUTURE_SLACK:
        raise InputError(
            f"--time {iso(t)} is in the future (now is {iso(now)}): a forecast is made from an "
            "observation that exists",
            field="--time",
        )
    return t


def load_members(
    checkpoints: Sequence[str | os.PathLike[str]],
    *,
    calibrations: Sequence[Any] | None = None,
    model: str | None = None,
    models: Sequence[str | None] | None = None,
    image_size: int | None = None,
    image_sizes: Sequence[int | None] | None = None,
    recipes: Sequence[Recipe | None] | None = None,
    source: str | os.PathLike[str] | None = None,
) -> list[Member]:
    """Load every member (``torch.load(weights_only=True)``), in eval mode.

    Args:
        checkpoints: the members' files.
        calibrations: one calibration map (or None) per member.
        model: the architecture every member must be (``--model``).
        models: one architecture (or None) per member, as an ``ensemble.json`` names them;
            each is checked against its checkpoint and names a bare ``state_dict``'s.
        image_size: image size of bare ``state_dict`` files (``--image-size``).
        image_sizes: one image size (or None) per member, checked against its checkpoint.
        recipes: one recipe (or None) per member, as an ``ensemble.json`` records them:
            checked against the checkpoint's, and what a bare ``state_dict`` forecasts.
        source: the file that listed the members (for messages).

    Raises:
        InputError: a checkpoint that does not load, is not the named architecture or size,
            contradicts its recipe, or members that forecast different events.
    """
    from dataclasses import replace

    from fdflare.inference.predict import load_model

    if not checkpoints:
        raise InputError("at least one checkpoint is needed")
    n = len(checkpoints)
    maps = list(calibrations) if calibrations is not None else [None] * n
    archs = list(models) if models is not None else [None] * n
    sizes = list(image_sizes) if image_sizes is not None else [image_size] * n
    stated = list(recipes) if recipes is not None else [None] * n
    members = []
    for c, cal, arch, size, recipe in zip(checkpoints, maps, archs, sizes, stated, strict=True):
        if model is not None and arch is not None and arch != model:
            raise InputError(
                f"the ensemble names {c} a {arch} model, not --model {model}", field="--model"
            )
        loaded = load_model(c, model=arch or model, image_size=size)
        if recipe is not None:
            if loaded.recipe.assumed:
                loaded.recipe = replace(recipe, assumed=False)
            elif not loaded.recipe.same_event(recipe):
                raise InputError(
                    f"{c} was trained for {loaded.recipe.event}, but the ensemble says "
                    f"{recipe.event}",
                    path=source,
                    field="recipe",
                )
        members.append(Member(str(c), loaded, cal))
    members_recipe(members)  # members of different events are refused before any work
    return members


def members_recipe(members: Sequence[Member]) -> Recipe:
    """The event every member forecasts (the study's, assumed, when none records one).

    Raises:
        InputError: two members were trained for different events.
    """
    from fdflare.core.recipe import common_recipe

    return common_recipe((m.checkpoint, m.loaded.recipe) for m in members)


def _decode(path: Path, obs: Observation, sizes: Sequence[int]) -> Observation:
    """Decode the JP2 (or FITS) at ``path`` into ``obs`` at each of ``sizes``, noting what is odd."""
    from fdflare.prepare.decode import decode_jp2, decode_with_geometry
    from fdflare.prepare.fits import decode_fits_with_geometry, is_fits
    from fdflare.prepare.jp2 import read_jp2_info

    if is_fits(path.name):  # JSOC: the field in gauss, to Helioviewer's grey levels
        for size in sorted(set(sizes)):
            obs.images[size], obs.geometry[size] = decode_fits_with_geometry(path, size)
        return obs

    info = read_jp2_info(path)
    if info.width != info.height:
        obs.notes.append(
            f"the image is {info.width} x {info.height}, not square (not a "
            "full-disk HMI frame?): resized to the model's square"
        )
    if min(info.width, info.height) < max(sizes):
        obs.notes.append(
            f"the image is {info.width} x {info.height}, smaller than the "
            f"model's {max(sizes)} px: upsampled, no detail added"
        )
    for size in sorted(set(sizes)):
        try:
            image, geo = decode_with_geometry(path, size)
        except InputError as exc:
            if "geometry" not in exc.message and exc.field is None:
                raise
            image, _k = decode_jp2(path, size)
            geo = None
            obs.notes.append(f"no disk geometry in the file ({exc.message})")
        obs.images[size], obs.geometry[size] = image, geo
    return obs


def _from_archive(
    requested: pd.Timestamp,
    sizes: Sequence[int],
    *,
    archive: Any,
    tolerance: pd.Timedelta,
    now: Callable[[], pd.Timestamp] | None = None,
) -> Observation:
    """The archive's file closest to ``requested``, decoded in place (see :func:`fetch_observation`)."""
    found = archive.closest(requested)
    where = archive.source
    passed = list(getattr(archive, "passed_over", []))
    if found is None:
        held = (
            "holds no JP2 file"
            if where.startswith("archive:")
            else f"has no good record within {format_age(tolerance)}"
        )
        bad = f" (bad quality: {', '.join(passed)})" if passed else ""
        raise NoObservationError(f"no HMI magnetogram near {iso(requested)}: {where} {held}{bad}")
    name, observed = found
    clock = (now or utcnow)()
    if observed > clock + FUTURE_SLACK:
        raise InputError(
            f"{name} is dated {iso(observed)}, after the clock's {iso(clock)}: a file of the "
            "future is not an observation to forecast from",
            path=archive.root,
        )
    delta = observed - requested
    if abs(delta) > tolerance:
        raise _no_observation(requested, tolerance, [(abs(delta), observed, f"{where}/{name}")])
    path = archive.path(name)
    obs = Observation(where, name, observed)
    if passed:
        obs.notes.append(f"nearer records of bad quality passed over: {', '.join(passed)}")
    try:
        return _decode(path, obs, sizes)
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(
            f"not a usable magnetogram: {type(exc).__name__}: {exc}", path=path
        ) from None


def fetch_observation(
    requested: pd.Timestamp,
    sizes: Sequence[int],
    *,
    base_urls: Sequence[str],
    tolerance: pd.Timedelta,
    policy: Any = None,
    source_id: int | None = None,
    now: Callable[[], pd.Timestamp] | None = None,
    archive: Any = None,
) -> Observation:
    """The observation closest to ``requested``, decoded at each of ``sizes``.

    Args:
        requested: the time to forecast from.
        sizes: the image sizes of the members.
        base_urls: Helioviewer API base URLs, tried in turn (unused with ``archive``).
        tolerance: the largest distance between ``requested`` and the observation.
        policy: the HTTP policy.
        source_id: Helioviewer's source id (default HMI magnetogram).
        now: the clock.
        archive: a :class:`~fdflare.forecast.archive.LocalArchive` to read instead of
            Helioviewer.

    Raises:
        NoObservationError: no observation within ``tolerance`` (the closest one is named).
        ServiceError: every base URL was unreachable or answered garbage after its retries.
        InputError: the archive's file is not a usable magnetogram (named).
    """
    if archive is not None:
        return _from_archive(requested, sizes, archive=archive, tolerance=tolerance, now=now)
    from fdflare import __version__
    from fdflare.acquire.helioviewer.client import (
        HMI_MAGNETOGRAM_SOURCE_ID,
        HelioviewerClient,
        ItemFailed,
    )
    from fdflare.core.http import GaveUp, HttpPolicy

    policy = policy or HttpPolicy(retries=3, concurrency=1)
    source = HMI_MAGNETOGRAM_SOURCE_ID if source_id is None else source_id
    failures: list[str] = []
    closest: list[tuple[pd.Timedelta, pd.Timestamp, str]] = []
    for url in base_urls:
        image_id = None
        with policy.client(headers={"User-Agent": f"fdflare/{__version__}"}) as client:
            api = HelioviewerClient(
                client=client, base_url=url, source_id=source, policy=policy, stop=threading.Event()
            )
            try:
                found = api.closest(requested)
                if isinstance(found, str):
                    closest.append((pd.Timedelta.max, requested, f"{url}: {found}"))
                    continue
                image_id, observed = found
                clock = (now or utcnow)()
                if observed > clock + FUTURE_SLACK:
                    failures.append(
                        f"{url}: answered an observation at {iso(observed)}, after the clock's "
                        f"{iso(clock)}: not an answer to trust"
                    )
                    continue
                delta = observed - requested
                if abs(delta) > tolerance:
                    closest.append((abs(delta), observed, url))
                    continue
                with tempfile.TemporaryDirectory(prefix="fdflare-forecast-") as tmp:
                    path = Path(tmp) / "magnetogram.jp2"  # never a name the server chose
                    api.jp2(image_id, path)
                    return _decode(path, Observation(url, str(image_id), observed), sizes)
            except GaveUp as exc:
                failures.append(f"{url}: {exc.reason}")
            except ItemFailed as exc:
                failures.append(f"{url}: {exc}")
            except (InputError, OSError, SyntaxError, ValueError) as exc:
                text = (
                    exc.message if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
                )
                failures.append(f"{url}: image {image_id} is not a usable magnetogram: {text}")
    if closest:
        raise _no_observation(requested, tolerance, closest, also="; ".join(failures))
    raise ServiceError("the service failed: " + "; ".join(failures))


def _no_observation(
    requested: pd.Timestamp,
    tolerance: pd.Timedelta,
    closest: list[tuple[pd.Timedelta, pd.Timestamp, str]],
    also: str = "",
) -> NoObservationError:
    delta, observed, where = min(closest, key=lambda c: c[0])
    extra = f" (also: {also})" if also else ""
    if delta == pd.Timedelta.max:
        return NoObservationError(f"no HMI magnetogram near {iso(requested)}: {where}{extra}")
    side = "after" if observed > requested else "before"
    return NoObservationError(
        f"no HMI magnetogram within {format_age(tolerance)} of {iso(requested)}: the closest is "
        f"{iso(observed)}, {format_age(delta)} {side} ({where}); widen --tolerance to use it{extra}"
    )


def predict_members(
    members: Sequence[Member],
    observation: Observation,
    *,
    calibration: Callable[[np.ndarray], np.ndarray] | None = None,
    accelerator: str = "auto",
) -> tuple[float, bool]:
    """Run each member on the observation; return the (calibrated) mean and whether mapped."""
    from fdflare.inference.images import predict_array
    from fdflare.inference.predict import resolve_device

    device = resolve_device(accelerator, "auto")
    probs = []
    for m in members:
        raw = float(
            predict_array(m.loaded.net, observation.images[m.loaded.image_size], device=device)[0]
        )
        m.raw_probability = raw
        p = (
            raw
            if m.calibration is None
            else float(np.clip(m.calibration(np.array([raw]))[0], 0, 1))
        )
        m.probability = p
        probs.append(p)
    mean = float(np.mean(probs))
    if calibration is not None:
        mean = float(np.clip(calibration(np.array([mean]))[0], 0.0, 1.0))
    calibrated = calibration is not None or any(m.calibration is not None for m in members)
    return mean, calibrated


def run_forecast(
    members: Sequence[Member],
    *,
    requested: pd.Timestamp,
    base_urls: Sequence[str],
    tolerance: pd.Timedelta,
    calibration: Callable[[np.ndarray], np.ndarray] | None = None,
    accelerator: str = "auto",
    policy: Any = None,
    now: Callable[[], pd.Timestamp] = utcnow,
    archive: Any = None,
    recipe: Recipe | None = None,
    flare_catalog: pd.DataFrame | FlaresUpTo | None = None,
) -> Forecast:
    """Fetch the observation, run the members and return the forecast (see module doc).

    ``archive`` (a :class:`~fdflare.forecast.archive.LocalArchive`) replaces Helioviewer;
    ``recipe`` is the event the members were trained for (default: the one they record);
    ``flare_catalog``: the flares a ``history`` calibration map reads, up to the
    observation time (:func:`fdflare.analysis.history.flare_history`): a catalog, or a
    function of the observation time that returns the flares and notes on them (``serve``
    asks its flare list then; it raises an ``FdflareError`` when it cannot answer).
    """
    obs = fetch_observation(
        requested,
        [m.loaded.image_size for m in members],
        base_urls=base_urls,
        tolerance=tolerance,
        policy=policy,
        now=now,
        archive=archive,
    )
    history = None
    if flare_catalog is not None and calibration is not None:
        calibration, history = _with_flare_history(calibration, obs, flare_catalog)
    prob, calibrated = predict_members(
        members, obs, calibration=calibration, accelerator=accelerator
    )
    return Forecast(
        prob,
        requested,
        obs,
        list(members),
        calibrated,
        now().floor("s"),
        recipe=members_recipe(members) if recipe is None else recipe,
        flare_history=history,
    )


def _with_flare_history(
    calibration: Callable[..., np.ndarray],
    obs: Observation,
    source: pd.DataFrame | FlaresUpTo,
) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, float]]:
    """The history map bound to the flares up to the observation, and those numbers.

    Says in the observation's notes what the history was. A catalog file cannot say where it
    starts or ends (before its first flare and past its last the history reads as quiet), so
    a forecast more than the history's longest window after its last flare, or less than
    that after its first, says so; a function (``serve``'s flare list, which knows what it
    covered) gives its own notes.
    """
    from fdflare.analysis.history import (
        FEATURES,
        WINDOWS_H,
        describe_history,
        flare_history,
        flare_span,
        naive_utc,
    )

    t = naive_utc([obs.time])
    if callable(source):
        catalog, notes = source(t[0])
    else:
        catalog, notes = source, []
        first, last = flare_span(catalog) or (None, None)
        window = pd.Timedelta(hours=max(WINDOWS_H))
        if last is not None and t[0] > last + window:
            notes.append(
                f"the catalog's last flare ({last:%Y-%m-%d %H:%M}) lies more than "
                f"{max(WINDOWS_H)} h before the observation: the flare history reads as quiet, "
                "which is true only if the catalog is up to date"
            )
        if first is not None and first > t[0] - window:
            notes.append(
                f"the catalog's first flare ({first:%Y-%m-%d %H:%M}) lies less than "
                f"{max(WINDOWS_H)} h before the observation, or after it: the flare history "
                "reads as quiet before it, which is true only if the catalog covers that time"
            )
    row = flare_history(t, catalog)
    obs.notes.append(HISTORY_NOTE + describe_history(row[0]))
    obs.notes.extend(notes)

    def mapped(p: np.ndarray) -> np.ndarray:
        return calibration(p, np.repeat(row, len(p), axis=0))

    return mapped, dict(zip(FEATURES, map(float, row[0]), strict=True))
