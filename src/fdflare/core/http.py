"""The one HTTP policy of fdflare's clients (Helioviewer, HEK): timeouts, retries, a bound.

:class:`HttpPolicy` holds everything a client needs to ask a remote service politely and
to survive its bad moments:

* timeouts to connect and for each read (:attr:`HttpPolicy.timeout`);
* retries of transient failures (timeouts, broken connections, HTTP 429 and 5xx, and
  whatever a client marks :class:`Retryable`, such as an HTML page where an image was
  expected, or a truncated body) with exponential back-off and jitter, run by tenacity
  (:meth:`HttpPolicy.call`);
* the server's ``Retry-After`` (seconds or an HTTP-date), honoured up to
  :attr:`HttpPolicy.retry_after_max`;
* a bound on the requests in flight at once (:meth:`HttpPolicy.slot`, also the size of the
  connection pool of :meth:`HttpPolicy.client`).

The clock and the sleep are injectable (``clock``, ``sleep``, ``rng``) so that tests check
the waits without waiting, and a ``stop`` event ends a back-off at once.

Example:
    >>> policy = HttpPolicy(retries=2, backoff=0.5, sleep=lambda s: None)
    >>> policy.delay(1, Retryable("HTTP 503", retry_after=3.0))
    3.0
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timezone
from typing import TYPE_CHECKING, TypeVar

import tenacity

from fdflare.core.errors import InputError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "MAX_RETRY_AFTER",
    "GaveUp",
    "HttpPolicy",
    "Retryable",
    "Stopped",
    "parse_retry_after",
    "snippet",
]

MAX_RETRY_AFTER = 600.0
"""Longest wait (seconds) granted to a server's ``Retry-After`` by default."""

_T = TypeVar("_T")


class Retryable(Exception):
    """A transient failure: try again after a back-off (or the server's ``Retry-After``).

    Args:
        reason: what went wrong, in words.
        retry_after: seconds the server asked to wait, if it did.
        unreachable: the service could not be reached at all (no connection).
    """

    def __init__(
        self, reason: str, retry_after: float | None = None, *, unreachable: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.unreachable = unreachable


class GaveUp(Exception):
    """Retries ran out; ``unreachable`` when the last failure was not even a connection."""

    def __init__(self, reason: str, *, attempts: int, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts
        self.unreachable = unreachable


class Stopped(Exception):
    """The run is being stopped (its ``stop`` event was set)."""


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Return the wait in seconds that a ``Retry-After`` header asks for, or None.

    Both forms of RFC 9110 are understood: delay-seconds (``120``) and an HTTP-date
    (``Wed, 21 Oct 2015 07:28:00 GMT``, counted from ``now``, default the current time).
    Dates in the past give 0; unparseable values give None.
    """
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def snippet(data: bytes, limit: int = 80) -> str:
    """The first ``limit`` bytes of a body as a one-line repr, for messages."""
    text = data[:limit].decode("utf-8", errors="replace")
    return repr(" ".join(text.split()))


@dataclasses.dataclass
class HttpPolicy:
    """Timeouts, retries with back-off, ``Retry-After`` and a bound on requests in flight.

    Args:
        connect_timeout: seconds to connect.
        read_timeout: seconds to wait for each read from the server.
        retries: retries after the first attempt of each request.
        backoff: first back-off in seconds, doubled per retry; each wait is drawn from
            ``[cap / 2, cap]`` (jitter) where ``cap = min(backoff_max, backoff * 2**n)``.
        backoff_max: longest back-off in seconds.
        retry_after_max: longest wait granted to a server's ``Retry-After``.
        concurrency: most requests in flight at once (see :meth:`slot`).
        sleep: the function that waits (default :func:`time.sleep`, or the ``stop``
            event's wait in :meth:`call`); tests pass one that records.
        clock: the wall clock, in seconds since the epoch (for ``Retry-After`` dates).
        rng: the random source of the jitter.
    """

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 5
    backoff: float = 1.0
    backoff_max: float = 60.0
    retry_after_max: float = MAX_RETRY_AFTER
    concurrency: int = 4
    sleep: Callable[[float], None] | None = dataclasses.field(default=None, repr=False)
    clock: Callable[[], float] = dataclasses.field(default=time.time, repr=False)
    rng: random.Random = dataclasses.field(default_factory=random.Random, repr=False)
    #: set once any HTTP response has arrived: the service can be reached
    reached: threading.Event = dataclasses.field(
        default_factory=threading.Event, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        checks = (
            (isinstance(self.concurrency, int) and self.concurrency >= 1, "concurrency", ">= 1"),
            (isinstance(self.retries, int) and self.retries >= 0, "retries", ">= 0"),
        )
        for ok, name, what in checks:
            if not ok:
                raise InputError(f"{name} must be an integer {what}", field=name)
        for name in ("connect_timeout", "read_timeout"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be positive", field=name)
        for name in ("backoff", "backoff_max", "retry_after_max"):
            if not getattr(self, name) >= 0:
                raise InputError(f"{name} must be non-negative", field=name)
        self._slots = threading.BoundedSemaphore(self.concurrency)

    # -- the parts a client uses ---------------------------------------------------------

    @property
    def timeout(self) -> httpx.Timeout:
        """The httpx timeout: connect, and each read or write; no limit on the pool wait."""
        import httpx

        return httpx.Timeout(
            connect=self.connect_timeout, read=self.read_timeout, write=self.read_timeout, pool=None
        )

    def client(self, *, headers: dict[str, str] | None = None) -> httpx.Client:
        """A new :class:`httpx.Client` with this policy's timeouts and connection bound."""
        import httpx

        return httpx.Client(
            timeout=self.timeout,
            limits=httpx.Limits(
                max_connections=self.concurrency, max_keepalive_connections=self.concurrency
            ),
            headers=headers,
            follow_redirects=True,
        )

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the ``concurrency`` request slots while the block runs."""
        with self._slots:
            yield

    def delay(self, attempt: int, exc: BaseException | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if isinstance(exc, Retryable) and exc.retry_after is not None:
            return min(max(0.0, exc.retry_after), self.retry_after_max)
        cap = min(self.backoff_max, self.backoff * 2.0 ** (attempt - 1))
        return cap * self.rng.uniform(0.5, 1.0)

    def retry_after(self, response: httpx.Response) -> float | None:
        """The ``Retry-After`` of a response in seconds (dates counted on :attr:`clock`)."""
        return parse_retry_after(response.headers.get("Retry-After"), now=self.clock())

    def check_status(self, response: httpx.Response, what: str) -> None:
        """Raise :class:`Retryable` for HTTP 429 and 5xx; note that the service answered.

        Other statuses are left to the caller.
        """
        self.reached.set()
        code = response.status_code
        if code == 429 or code >= 500:
            raise Retryable(
                f"HTTP {code} {response.reason_phrase}".rstrip(),
                retry_after=self.retry_after(response),
            )

    @staticmethod
    def transport_error(exc: Exception, *, in_body: bool = False) -> Exception:
        """Classify an :class:`httpx.HTTPError`: :class:`Retryable` when transient.

        Timeouts and broken connections are transient; a failure to connect is marked
        ``unreachable``; anything else (a bad URL scheme, ...) is returned as it is.
        """
        import httpx

        if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError):
            return Retryable(f"cannot connect ({type(exc).__name__}: {exc})", unreachable=True)
        if isinstance(exc, httpx.TimeoutException):
            return Retryable(f"timed out ({type(exc).__name__})")
        if isinstance(exc, httpx.UnsupportedProtocol):
            return exc
        if isinstance(exc, httpx.TransportError):
            if in_body:
                return Retryable(f"incomplete body, the connection broke ({exc})")
            return Retryable(f"connection error ({type(exc).__name__}: {exc})")
        return exc

    def call(
        self, what: str, attempt: Callable[[], _T], *, stop: threading.Event | None = None
    ) -> _T:
        """Run ``attempt`` until it succeeds, retrying on :class:`Retryable`.

        Args:
            what: the request, for the message when retries run out.
            attempt: one try; raises :class:`Retryable` for a transient failure (anything
                else ends the retries at once and propagates).
            stop: when set, no further attempt starts and a back-off ends at once.

        Raises:
            GaveUp: every attempt failed; the reason of the last, and the number made.
            Stopped: ``stop`` was set.
        """

        def guarded() -> _T:
            if stop is not None and stop.is_set():
                raise Stopped
            return attempt()

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            return self.delay(state.attempt_number, exc)

        def sleep(seconds: float) -> None:
            if self.sleep is not None:
                self.sleep(seconds)
            elif stop is not None:
                if stop.wait(seconds):
                    raise Stopped
                return
            else:
                time.sleep(seconds)
            if stop is not None and stop.is_set():
                raise Stopped

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            retry=tenacity.retry_if_exception_type(Retryable),
            wait=wait,
            sleep=sleep,
            reraise=True,
        )
        try:
            return retrying(guarded)
        except Retryable as exc:
            attempts = self.retries + 1
            raise GaveUp(
                f"{what}: {exc.reason} (gave up after {attempts} attempt(s))",
                attempts=attempts,
                unreachable=exc.unreachable,
            ) from None
