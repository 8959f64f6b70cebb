"""Fatal faults end in one line: hostile settings and files, failures of several tasks at
once. Real node processes; each must exit 2 (configuration) or 1 (run time) with one
line on stderr, never a traceback, never a hang, and write nothing into a data dir it
refuses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from pathlib import Path

import nacl.signing
import pytest

from qudag_node.config import MAX_SETTINGS_FILE_BYTES, ConfigError
from qudag_node.failure import NodeFailure, exception_leaves, stop_cause
from tests.adapters.test_store import damage_table
from tests.nodeproc import NodeProcess, request, submit_json
from tests.system.test_cli import Result, one_line, run_until_exit

#: Bytes that are not UTF-8, as the environment hands them to Python.
NOT_UTF8 = os.fsdecode(b"token-\xff\xfe-" * 4)


def _refused(result: Result, code: int, *parts: str) -> str:
    """The single stderr line of a refused start, checked to hold each of ``parts``."""
    assert result.code == code, result.stderr
    line = one_line(result.stderr)
    assert line.startswith("qudag-node: "), line
    for part in parts:
        assert part in line, line
    assert "Traceback" not in result.stderr + result.stdout
    return line


# ------------------------------------------------------------- settings


@pytest.mark.parametrize("name", ["PEER_AUTH_TOKEN", "NODE_ID", "QUDAG_PEERS"])
def test_a_setting_that_is_not_utf8_exits_2(tmp_path: Path, name: str) -> None:
    result = run_until_exit(tmp_path / "data", **{name: NOT_UTF8})
    line = _refused(result, 2, name, "not UTF-8")
    assert "token-" not in line  # the value is not echoed
    assert not (tmp_path / "data").exists()


def test_a_config_file_that_is_not_utf8_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_bytes(b'node_id = "node\xff"\n')
    _refused(run_until_exit(tmp_path / "data", QUDAG_CONFIG=str(path)), 2, str(path), "not UTF-8")


def test_a_config_file_nested_too_deeply_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("node_id = " + "[" * 100_000 + "]" * 100_000 + "\n")
    _refused(run_until_exit(tmp_path / "data", QUDAG_CONFIG=str(path)), 2, "nested too deeply")


def test_a_genesis_file_nested_too_deeply_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "genesis.json"
    path.write_text('{"network_id": ' + "[" * 100_000 + "]" * 100_000 + "}")
    result = run_until_exit(tmp_path / "data", QUDAG_GENESIS=str(path))
    _refused(result, 2, "QUDAG_GENESIS", "nested too deeply")
    assert list((tmp_path / "data").iterdir()) == []


@pytest.mark.parametrize("kind", ["fifo", "directory", "dangling symlink"])
def test_a_settings_file_that_is_not_a_regular_file_exits_2(tmp_path: Path, kind: str) -> None:
    """A FIFO is never opened waiting for a writer: the start ends at once."""
    for variable in ("QUDAG_CONFIG", "QUDAG_GENESIS"):
        path = tmp_path / f"{variable}-{kind.replace(' ', '-')}"
        _make(path, kind)
        result = run_until_exit(tmp_path / "data", **{variable: str(path)})
        _refused(result, 2, str(path), _KIND_WORDS[kind])


def test_a_genesis_file_over_the_size_limit_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "genesis.json"
    path.write_text('{"network_id": "' + "x" * MAX_SETTINGS_FILE_BYTES + '"}')
    result = run_until_exit(tmp_path / "data", QUDAG_GENESIS=str(path))
    _refused(result, 2, str(path), f"larger than {MAX_SETTINGS_FILE_BYTES} bytes")


# ------------------------------------------------------------ data dir

_KIND_WORDS = {"fifo": "a FIFO", "directory": "a directory", "dangling symlink": "dangling"}


def _make(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to(path.parent / "nowhere")


@pytest.mark.parametrize("kind", ["fifo", "directory", "dangling symlink"])
def test_a_node_key_that_is_not_a_regular_file_exits_1(tmp_path: Path, kind: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _make(data / "node.key", kind)
    result = run_until_exit(data)
    _refused(result, 1, str(data / "node.key"), _KIND_WORDS[kind])
    assert sorted(p.name for p in data.iterdir()) == ["node.key"]  # nothing written


@pytest.mark.parametrize("kind", ["fifo", "directory", "dangling symlink"])
def test_a_database_that_is_not_a_regular_file_exits_1(tmp_path: Path, kind: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _make(data / "qudag.db", kind)
    result = run_until_exit(data)
    _refused(result, 1, str(data / "qudag.db"), _KIND_WORDS[kind])
    assert sorted(p.name for p in data.iterdir()) == ["qudag.db"]  # no node.key either


def test_a_foreign_data_dir_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    node = NodeProcess(data, tmp_path / "node.log").start()  # a network of its own key
    code, body = submit_json(node.url, [b"kept by the first network"], wait=True)
    assert code == 200, body
    assert node.stop() == 0
    (data / "node.key").unlink()  # this data dir now belongs to another node's network
    before = {p.name: p.stat().st_mtime_ns for p in data.iterdir()}
    result = run_until_exit(data)
    _refused(result, 1, "belongs to network")
    assert {p.name: p.stat().st_mtime_ns for p in data.iterdir()} == before
    # a key given in the environment changes nothing either
    key = bytes(nacl.signing.SigningKey.generate()).hex()
    _refused(run_until_exit(data, NODE_PRIVATE_KEY=key), 1, "belongs to network")
    assert {p.name: p.stat().st_mtime_ns for p in data.iterdir()} == before


def test_the_log_length_and_hash_are_logged_at_start(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "data", tmp_path / "node.log").start()
    code, body = submit_json(node.url, [b"one", b"two"], wait=True)
    assert code == 200, body
    code, log = request("GET", node.url + "/api/v1/log?limit=1")
    assert code == 200
    assert node.stop() == 0
    stopped = node.records()[-1]
    assert stopped["event"] == "stopped"
    assert (stopped["log_length"], stopped["log_hash"]) == (2, log["hash"])
    node.start()
    try:
        loaded = next(r for r in node.records() if r["event"] == "state_loaded")
        assert loaded["log_length"] == log["length"] == 2
        assert loaded["log_hash"] == log["hash"]
        assert isinstance(loaded["wal_bytes"], int)
    finally:
        assert node.stop() == 0


@pytest.mark.parametrize("kind", ["file", "fifo", "dangling symlink"])
def test_a_data_dir_that_is_not_a_directory_exits_1(tmp_path: Path, kind: str) -> None:
    data = tmp_path / "data"
    if kind == "file":
        data.write_text("not a directory\n")
    else:
        _make(data, kind)
    _refused(run_until_exit(data), 1, f"data dir {data}: not a directory")


# ------------------------------------------------- several failures at once


def test_damage_found_by_two_tasks_at_once_ends_in_one_line(tmp_path: Path) -> None:
    """Submits of stored transactions read the damaged index in the pump while the
    integrity check reads it too: whichever fails first, or both, one line."""
    data = tmp_path / "data"
    node = NodeProcess(data, tmp_path / "node.log").start()
    txs = [os.urandom(200) for _ in range(3000)]
    code, body = submit_json(node.url, txs, wait=True)
    assert code == 200, body
    assert node.stop() == 0
    with sqlite3.connect(data / "qudag.db") as db:
        (index,) = db.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'transactions'"
        ).fetchone()
    assert damage_table(data / "qudag.db", index) >= 1
    assert damage_table(data / "qudag.db", "transactions") >= 1

    with contextlib.suppress(AssertionError):  # it may stop before /health answers
        node.start(ready=False)
    assert node.proc is not None
    k = 0
    while node.port is not None and node.proc.poll() is None and k < len(txs):
        code, _ = submit_json(node.url, txs[k : k + 100])  # each is answered, or refused
        assert code in (0, 500, 503), code
        k += 100
    assert node.wait(30) == 1
    assert _stderr_lines(node) == [_stderr_lines(node)[-1]], node.logs()
    # the integrity check names the file ("database <path>: ..."), the pump's read the
    # failed read ("cannot read the database: ..."): one of them, never both
    assert _stderr_lines(node)[0].startswith(
        (
            "qudag-node: node stopped: database ",
            "qudag-node: node stopped: cannot read the database: ",
        )
    ), node.logs()
    assert "Traceback" not in "".join(_stderr_lines(node))


def _stderr_lines(node: NodeProcess) -> list[str]:
    """The lines of the node's output that are not JSON log records (its stderr)."""
    return [line for line in node.logs().splitlines() if not line.startswith("{")]


def test_nested_exception_groups_are_taken_apart_in_order() -> None:
    async def fail_together() -> None:
        async def fail(error: Exception) -> None:
            await asyncio.sleep(0)
            raise error

        async def inner() -> None:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(fail(ValueError("inner")))
                tg.create_task(fail(NodeFailure("the cause")))

        async with asyncio.TaskGroup() as tg:
            tg.create_task(fail(ConfigError("configuration")))
            tg.create_task(inner())

    with pytest.raises(BaseExceptionGroup) as caught:
        asyncio.run(fail_together())
    leaves = exception_leaves(caught.value)
    assert [type(e).__name__ for e in leaves] == ["ConfigError", "ValueError", "NodeFailure"]
    cause = stop_cause(caught.value)
    assert isinstance(cause, NodeFailure)
    assert str(cause) == "the cause"
    assert isinstance(stop_cause(ExceptionGroup("", [ValueError("a\nb")])), NodeFailure)
    assert str(stop_cause(ExceptionGroup("", [ValueError("a\nb")]))) == "unexpected ValueError: a b"
