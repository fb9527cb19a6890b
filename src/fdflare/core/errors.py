"""Errors raised by fdflare, each saying what was wrong and where.

The CLI prints the message of any :class:`FdflareError` on one line and exits with the
error's :attr:`~FdflareError.exit_status`; anything else is a bug and shows a traceback.

Exit statuses, the same for every command:

====  ======================================================================
0     done
1     done, but some items failed (each is counted and listed)
2     bad arguments or input: nothing was done, or nothing was written
3     a run failed (a service that retries could not mend, training failed)
4     ``fdflare forecast`` only: no observation within the tolerance to forecast from
130   interrupted (Ctrl-C); a rerun or ``--resume`` continues
====  ======================================================================
"""

from __future__ import annotations

from os import PathLike

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_NO_DATA = 4
EXIT_INTERRUPTED = 130


class FdflareError(Exception):
    """Base class of the errors that fdflare reports to the user without a traceback."""

    #: the process exit status the CLI returns for this error
    exit_status = EXIT_USAGE


class InputError(FdflareError):
    """A file given to fdflare is malformed.

    Args:
        message: what is wrong, in words.
        path: the file.
        line: the 1-based line number in the file (the header is line 1).
        field: the column or field name.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | PathLike[str] | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path)
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        return (", ".join(where) + ": " if where else "") + self.message


class MissingDataError(FdflareError):
    """Data that a stage needs is absent; the message says which command makes it."""


class UsageError(FdflareError):
    """A command-line argument is wrong; the message names the option."""


class OutputError(FdflareError):
    """An output path cannot be used: it is an input, the wrong kind of path, or not writable."""


class BusyError(FdflareError):
    """Another fdflare run holds the lock on the output folder."""


class RunError(FdflareError):
    """A run started and failed (exit status 3)."""

    exit_status = EXIT_FAILED


class DownloadError(RunError):
    """A remote service failed in a way retries could not mend."""
