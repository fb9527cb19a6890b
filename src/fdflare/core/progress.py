"""Progress on stderr: a tqdm bar on a terminal, a few plain lines anywhere else.

A bar redraws itself with carriage returns, which a terminal shows as one moving line
but a log file or a pipe keeps as one long line of every redraw. So when stderr is not a
terminal, :func:`progress_bar` prints a plain line each time another tenth of the work is
done (``synth: 40% (400/1000 img)``) and never a carriage return.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO


class LineProgress:
    """A progress counter that prints a plain line at each tenth of ``total``.

    It has the parts of a tqdm bar that fdflare uses (``update``, ``set_postfix``,
    ``close``, iteration, ``with``), so either can stand for the other.
    """

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        file: TextIO | None = None,
        steps: int = 10,
    ) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = initial
        self.file = file
        self.steps = steps
        self.postfix = ""
        self._shown = self._step()

    def _step(self) -> int:
        if not self.total:
            return 0
        return min(self.steps, self.n * self.steps // self.total)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more done; print a line when another tenth is reached."""
        self.n += n
        step = self._step()
        if step > self._shown:
            self._shown = step
            self._print()

    def _print(self) -> None:
        pct = 100 * self.n // self.total if self.total else 0
        text = f"{self.desc}: {pct}% ({self.n}/{self.total} {self.unit})"
        if self.postfix:
            text += f", {self.postfix}"
        print(text, file=self.file or sys.stderr, flush=True)

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        """Counts shown after the fraction on the next line (as tqdm's ``set_postfix``)."""
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k} {v}" for k, v in items.items())

    def close(self) -> None:
        """Nothing to clear: every line is already complete."""

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            return
        for item in self.iterable:
            yield item
            self.update(1)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str,
    unit: str = "it",
    enabled: bool = True,
    initial: int = 0,
    **tqdm_options: Any,
) -> Any:
    """A tqdm bar on stderr when it is a terminal; else a :class:`LineProgress`.

    Args:
        iterable: items to wrap, as ``tqdm(iterable)``.
        total: how many items (taken from ``iterable`` when it has a length).
        desc: what is counted, first on each line.
        unit: the unit of the count.
        enabled: ``False`` (a ``--quiet`` run) shows nothing.
        initial: items already done.
        **tqdm_options: passed on to tqdm (``dynamic_ncols``...) on a terminal.
    """
    if not enabled:
        return LineProgress(iterable, total=0, desc=desc, unit=unit, steps=0)
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(
            iterable,
            total=total,
            desc=desc,
            unit=unit,
            initial=initial,
            file=sys.stderr,
            **tqdm_options,
        )
    return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)


__all__ = ["LineProgress", "progress_bar"]
