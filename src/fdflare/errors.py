"""Errors raised by fdflare, each saying what was wrong and where.

The CLI prints the message of any :class:`FdflareError` on one line and exits with status 2;
anything else is a bug and shows a traceback.
"""

from __future__ import annotations

from os import PathLike


class FdflareError(Exception):
    """Base class of the errors that fdflare reports to the user without a traceback."""


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


class DownloadError(FdflareError):
    """A remote service failed in a way retries could not mend."""
