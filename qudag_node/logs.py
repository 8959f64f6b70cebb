"""Logging: structlog for the node's own events, the standard library routed alongside.

``json`` writes one JSON object per line (``timestamp`` in ISO-8601 UTC, ``level``,
``event`` and any bound keys); ``console`` writes structlog's readable lines, coloured
only on a terminal; ``auto`` picks ``console`` on a terminal and ``json`` otherwise.
Records of standard-library loggers (aiohttp's server and access logs) at WARNING and
above go through the same renderer, so library errors are structured too.

Every string that is written, including exception text, passes through a scrubber that
replaces known secret values with ``***``: secrets are never logged on purpose, and
this is the second line of defence.

Modules take their logger once, at import: ``log = get_logger("qudag.<module>")``,
typed :class:`~structlog.typing.FilteringBoundLogger`. It is assembled on its first
line and cached (structlog's ``cache_logger_on_first_use``), so :func:`configure_logging`
runs before anything is logged. Context that identifies a peer link or a request is
bound once (``link_log = log.bind(peer=..., address=...)``), not repeated on each line.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

#: Secrets shorter than this are not scrubbed: replacing them would mangle ordinary text.
MIN_SECRET_LENGTH = 8
REDACTED = "***"


class _Handler(logging.StreamHandler[TextIO]):
    """The root handler this module installs; replaced on each reconfiguration."""


class _NamedWriteLogger(structlog.WriteLogger):
    """A write logger that carries its name, as ``structlog.stdlib.add_logger_name`` reads."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


class _LoggerFactory:
    """Makes the logger behind ``get_logger(name)``: printing to the configured stream."""

    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedWriteLogger:
        return _NamedWriteLogger(self._file, str(args[0]) if args else "")


class SecretScrubber:
    """A processor replacing every occurrence of a secret in string values."""

    def __init__(self, secrets: Sequence[str]) -> None:
        kept = {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted(kept, key=len, reverse=True)

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        """Scrub every value of ``event_dict``."""
        if not self._secrets:
            return event_dict
        return {key: self._scrub(value) for key, value in event_dict.items()}

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(v) for v in value]
        if isinstance(value, BaseException):
            return self._scrub(f"{type(value).__name__}: {value}")
        return value


def configure_logging(
    level: str,
    fmt: str,
    secrets: Sequence[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and the standard library's root logger, before the first line.

    ``level`` is one of debug, info, warning, error, critical; ``fmt`` one of json,
    console, auto. ``secrets`` are scrubbed from every line. Output goes to ``stream``
    (default: standard output). A logger is cached on its first line: calling this again
    reaches the loggers not used yet and the standard library's, not those already used.
    """
    out = stream if stream is not None else sys.stdout
    tty = _isatty(out)
    renderer: Processor
    if fmt == "console" or (fmt == "auto" and tty):
        renderer = structlog.dev.ConsoleRenderer(colors=tty)
    elif fmt in ("json", "auto"):
        renderer = structlog.processors.JSONRenderer()
    else:
        raise ValueError(f"unknown log format {fmt!r}")
    min_level = structlog.processors.NAME_TO_LEVEL[level.lower()]
    scrub = SecretScrubber(secrets)
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_logger_name,
            structlog.processors.add_log_level,
            stamp,
            # Exceptions become plain text here so the scrubber sees them and no
            # renderer prints local variables.
            structlog.processors.format_exc_info,
            scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        logger_factory=_LoggerFactory(out),
        cache_logger_on_first_use=True,
    )

    handler = _Handler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                stamp,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                scrub,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(max(logging.WARNING, min_level))


class Throttle:
    """Rate-limits repeated log lines of one kind, counting the lines it holds back.

    Each key (one of our own codes, never text from a client or a peer) may pass
    ``burst`` lines per ``period`` seconds. :meth:`allow` answers ``None`` for a line to
    drop, or the number of lines of that key dropped since the last one written, which
    the caller logs as ``suppressed``. The keys kept are bounded by ``max_keys``.
    """

    def __init__(
        self,
        period: float = 10.0,
        burst: int = 5,
        *,
        max_keys: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if period <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("period must be positive, burst and max_keys at least 1")
        self._period = period
        self._burst = burst
        self._max_keys = max_keys
        self._clock = clock
        # key -> [window start, lines written in the window, lines dropped since]
        self._windows: dict[str, list[float]] = {}

    def allow(self, key: str) -> int | None:
        """``None`` to drop this line, else how many lines of ``key`` were dropped."""
        now = self._clock()
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= self._max_keys:
                self._windows.pop(next(iter(self._windows)))
            window = self._windows[key] = [now, 0.0, 0.0]
        if now - window[0] >= self._period:
            window[0], window[1] = now, 0.0
        if window[1] >= self._burst:
            window[2] += 1
            return None
        window[1] += 1
        dropped, window[2] = int(window[2]), 0.0
        return dropped


def get_logger(name: str) -> FilteringBoundLogger:
    """A logger whose lines carry ``logger=name``, typed as the filtering bound logger
    :func:`configure_logging` installs; assembled on its first line, then cached."""
    return cast(FilteringBoundLogger, structlog.get_logger(name))


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
