"""Worker processes of the prepare stage, surviving a decoder that crashes its process.

``--workers`` means worker processes everywhere in fdflare; here each decodes files on its
own. A process that dies (a decoder crash on a corrupt file) costs only the file that
killed it: that file is retried alone in a fresh process and reported if it kills that one
too. Workers ignore Ctrl-C, so the main process alone reports "interrupted".
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from fdflare.core.errors import FdflareError

__all__ = ["default_workers", "progress_bar", "run_tasks"]


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def default_workers() -> int:
    """Return the CPUs this process may run on (the default ``--workers``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def run_tasks(
    fn: Callable[[Any], dict[str, Any]],
    tasks: Sequence[Any],
    workers: int,
    on_result: Callable[[Any, dict[str, Any]], None],
) -> None:
    """Run ``fn`` over ``tasks`` in ``workers`` processes, calling ``on_result(task, result)``.

    A task whose worker process dies (a decoder crash) is retried alone in a fresh process;
    if it kills that one too, it is reported as ``{"bad": "the decoder crashed ..."}``.
    """
    if min(workers, len(tasks)) <= 1:
        for task in tasks:
            on_result(task, fn(task))
        return
    context = multiprocessing.get_context("spawn")
    queue: deque[Any] = deque(tasks)
    window = 4 * workers
    while queue:
        suspects: list[Any] = []
        with cf.ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_ignore_sigint
        ) as pool:
            inflight: dict[cf.Future[dict[str, Any]], Any] = {}
            broken = False
            while (queue or inflight) and not broken:
                while queue and len(inflight) < window:
                    task = queue.popleft()
                    inflight[pool.submit(fn, task)] = task
                done, _ = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    task = inflight.pop(future)
                    try:
                        result = future.result()
                    except cf.process.BrokenProcessPool:
                        suspects.append(task)
                        broken = True
                        continue
                    on_result(task, result)
            if broken:
                for future, task in inflight.items():
                    future.cancel()
                    suspects.append(task)
        for task in suspects:
            with cf.ProcessPoolExecutor(
                max_workers=1, mp_context=context, initializer=_ignore_sigint
            ) as alone:
                try:
                    result = alone.submit(fn, task).result()
                except cf.process.BrokenProcessPool:
                    result = {"bad": "the decoder crashed on this file (worker process died)"}
            if "bad" in result and not _workers_start(context):
                raise FdflareError(
                    "worker processes cannot start (see the messages above); "
                    "run with one worker (--workers 1)"
                )
            on_result(task, result)


def _workers_start(context: Any) -> bool:
    """Whether a fresh worker process can run a trivial task (tells a crash from a setup fault)."""
    try:
        with cf.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            return pool.submit(os.getpid).result() > 0
    except cf.process.BrokenProcessPool:
        return False


def progress_bar(total: int, *, enabled: bool) -> Any:
    """Return a tqdm bar on stderr, shown only when ``enabled`` and stderr is a terminal."""
    import sys

    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="img",
        desc="prepare",
        file=sys.stderr,
        disable=not enabled or not sys.stderr.isatty() or total == 0,
    )
