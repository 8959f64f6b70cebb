"""Logging: JSON and console output, level filtering, the secret scrubber, stdlib routing."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog

from qudag_node.logs import Throttle, configure_logging, get_logger

HIDDEN = "s3cr3t-value-0123456789"
HIDDEN_2 = "another-secret-abcdef"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Put structlog and the root logger back as they were before the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """The JSON objects written to ``stream``, one per line."""
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    log = get_logger("qudag.test")
    log.info("started", port=8080, peers=["a:1"])
    log.bind(round=3).warning("slow round")
    first, second = lines(out)
    assert first["event"] == "started"
    assert first["level"] == "info"
    assert first["logger"] == "qudag.test"
    assert (first["port"], first["peers"]) == (8080, ["a:1"])
    stamp = datetime.fromisoformat(first["timestamp"])
    assert stamp.utcoffset() == timedelta(0)
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60
    assert (second["event"], second["level"], second["round"]) == ("slow round", "warning", 3)


def test_json_is_one_line_per_event() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    log = get_logger("qudag.test")
    try:
        raise ValueError("first line\nsecond line")
    except ValueError:
        log.exception("failed", note="a\nb")
    (entry,) = lines(out)
    assert entry["level"] == "error"
    assert entry["note"] == "a\nb"
    assert "ValueError: first line\nsecond line" in entry["exception"]


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("debug", ["debug", "info", "warning", "error", "critical"]),
        ("info", ["info", "warning", "error", "critical"]),
        ("warning", ["warning", "error", "critical"]),
        ("error", ["error", "critical"]),
        ("critical", ["critical"]),
    ],
)
def test_level_filtering(level: str, expected: list[str]) -> None:
    out = io.StringIO()
    configure_logging(level, "json", stream=out)
    log = get_logger("qudag.test")
    log.debug("debug")
    log.info("info")
    log.warning("warning")
    log.error("error")
    log.critical("critical")
    assert [e["event"] for e in lines(out)] == expected
    assert [e["level"] for e in lines(out)] == expected


def test_console_mode_is_readable_text() -> None:
    out = io.StringIO()
    configure_logging("info", "console", stream=out)
    get_logger("qudag.test").info("node ready", port=8080)
    text = out.getvalue()
    assert not ANSI.search(text), "no colours off a terminal"
    assert "node ready" in text
    assert "port=8080" in text
    assert "info" in text
    assert "qudag.test" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_auto_mode_writes_json_off_a_terminal() -> None:
    out = io.StringIO()
    configure_logging("info", "auto", stream=out)
    get_logger("qudag.test").info("hello")
    assert lines(out)[0]["event"] == "hello"


def test_auto_mode_is_coloured_console_on_a_terminal() -> None:
    leader, follower = pty.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as tty:
            configure_logging("info", "auto", stream=tty)
            get_logger("qudag.test").info("hello", k=1)
            tty.flush()
            text = os.read(leader, 65536).decode()
    finally:
        os.close(leader)
        os.close(follower)
    assert ANSI.search(text)
    plain = ANSI.sub("", text)
    assert "hello" in plain
    assert "k=1" in plain


def test_reconfiguring_replaces_the_output() -> None:
    first, second = io.StringIO(), io.StringIO()
    log = get_logger("qudag.test")  # taken before configuration, as modules do
    configure_logging("info", "json", stream=first)
    configure_logging("info", "json", stream=second)
    log.info("to the second")
    logging.getLogger("aiohttp.server").warning("library warning")
    assert first.getvalue() == ""
    assert [e["event"] for e in lines(second)] == ["to the second", "library warning"]


def test_a_logger_is_cached_on_its_first_line() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "json", stream=first)
    used, unused = get_logger("qudag.test"), get_logger("qudag.test")
    used.info("assembled")
    configure_logging("info", "json", stream=second)
    used.info("still cached")
    unused.info("assembled after")
    assert [e["event"] for e in lines(first)] == ["assembled", "still cached"]
    assert [e["event"] for e in lines(second)] == ["assembled after"]


def test_bound_context_is_on_every_line_of_the_bound_logger() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    link = get_logger("qudag.test").bind(peer="v2", address="10.0.0.2:7000")
    link.info("peer_connected", direction="inbound")
    link.warning("peer_silent", silent_seconds=1.5)
    connected, silent = lines(out)
    assert (connected["event"], connected["direction"]) == ("peer_connected", "inbound")
    assert silent["silent_seconds"] == 1.5
    for entry in (connected, silent):
        assert (entry["peer"], entry["address"], entry["logger"]) == (
            "v2",
            "10.0.0.2:7000",
            "qudag.test",
        )


def test_stdlib_records_are_structured_from_warning_up() -> None:
    out = io.StringIO()
    configure_logging("debug", "json", stream=out)
    logging.getLogger("aiohttp.access").info("GET / 200")
    logging.getLogger("aiohttp.server").error("Error handling request from %s", "10.0.0.1")
    (entry,) = lines(out)
    assert entry["event"] == "Error handling request from 10.0.0.1"
    assert entry["level"] == "error"
    assert entry["logger"] == "aiohttp.server"
    assert "timestamp" in entry


def test_stdlib_records_respect_a_higher_level() -> None:
    out = io.StringIO()
    configure_logging("error", "json", stream=out)
    logging.getLogger("aiohttp.server").warning("dropped")
    logging.getLogger("aiohttp.server").error("kept")
    assert [e["event"] for e in lines(out)] == ["kept"]


def test_scrubber_replaces_secrets_everywhere() -> None:
    out = io.StringIO()
    configure_logging("info", "json", secrets=[HIDDEN, HIDDEN_2], stream=out)
    log = get_logger("qudag.test")
    log.info(f"event with {HIDDEN}", value=f"x{HIDDEN}y", nested={"a": [HIDDEN_2, 1]})
    try:
        raise RuntimeError(f"failed with {HIDDEN}")
    except RuntimeError as e:
        log.exception("crash", error=e)
    logging.getLogger("aiohttp.server").error("peer sent %s", HIDDEN_2)
    text = out.getvalue()
    assert HIDDEN not in text
    assert HIDDEN_2 not in text
    plain, crash, library = lines(out)
    assert plain["event"] == "event with ***"
    assert plain["value"] == "x***y"
    assert plain["nested"] == {"a": ["***", 1]}
    assert crash["error"] == "RuntimeError: failed with ***"
    assert "RuntimeError: failed with ***" in crash["exception"]
    assert library["event"] == "peer sent ***"


def test_scrubber_in_console_mode() -> None:
    out = io.StringIO()
    configure_logging("info", "console", secrets=[HIDDEN], stream=out)
    log = get_logger("qudag.test")
    try:
        raise RuntimeError(f"failed with {HIDDEN}")
    except RuntimeError:
        log.exception("crash", token=HIDDEN)
    text = out.getvalue()
    assert HIDDEN not in text
    assert "RuntimeError: failed with ***" in text


def test_short_secrets_are_ignored() -> None:
    out = io.StringIO()
    configure_logging("info", "json", secrets=["short", ""], stream=out)
    get_logger("qudag.test").info("a short word")
    assert lines(out)[0]["event"] == "a short word"


def test_secret_containing_another_is_replaced_whole() -> None:
    out = io.StringIO()
    inner = HIDDEN[:10]
    configure_logging("info", "json", secrets=[inner, HIDDEN], stream=out)
    get_logger("qudag.test").info(f"[{HIDDEN}] [{inner}]")
    assert lines(out)[0]["event"] == "[***] [***]"


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_throttle_passes_a_burst_per_period_and_counts_what_it_drops() -> None:
    clock = _Clock()
    throttle = Throttle(period=10.0, burst=2, clock=clock)
    assert [throttle.allow("refused") for _ in range(5)] == [0, 0, None, None, None]
    assert throttle.allow("other") == 0  # keys are counted apart
    clock.now += 9.9
    assert throttle.allow("refused") is None
    clock.now += 0.1
    assert throttle.allow("refused") == 4  # the next line written reports the dropped ones
    assert throttle.allow("refused") == 0
    assert throttle.allow("refused") is None


def test_throttle_keeps_a_bounded_number_of_keys() -> None:
    throttle = Throttle(period=10.0, burst=1, max_keys=3, clock=_Clock())
    for key in ("a", "b", "c", "d"):
        assert throttle.allow(key) == 0
    assert throttle.allow("a") == 0  # "a" was forgotten to make room for "d"
    assert throttle.allow("d") is None


def test_throttle_refuses_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="period"):
        Throttle(period=0)
