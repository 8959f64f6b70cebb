"""A full disk, on a real small filesystem (an 8 MiB tmpfs) under a real node process:
writes refused with 507, reads kept, recovery once space is freed, never a hang."""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qudag_node.core.crypto import tx_id
from tests.network import network
from tests.nodeproc import NodeProcess, request, submit_json, wait_until
from tests.system.test_cli import run_until_exit
from tests.tools import tools_required

FS_SIZE = "8m"
#: QUDAG_MIN_FREE_DISK_MB in these tests: the consensus's reserve.
FLOOR_MB = 2
#: A node that writes nothing by itself (no heartbeat vertices) unless asked.
QUIET = {"QUDAG_MIN_FREE_DISK_MB": str(FLOOR_MB), "QUDAG_HEARTBEAT_INTERVAL": "3600"}


def _unavailable(reason: str) -> None:
    if tools_required():
        pytest.fail(f"QUDAG_REQUIRE_TOOLS is set but {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def mounted_small_fs(mountpoint: Path) -> Iterator[Path]:
    """A fresh 8 MiB tmpfs mounted on the new directory ``mountpoint``, unmounted after."""
    if os.geteuid() != 0:
        _unavailable("mounting a small filesystem needs root")
    mountpoint.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE}", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        _unavailable(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A fresh 8 MiB tmpfs mounted in the test's directory, unmounted afterwards."""
    with mounted_small_fs(tmp_path / "fs") as mountpoint:
        yield mountpoint


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(fs: Path, leave: int) -> Path:
    """Write a filler file until at most ``leave`` bytes are free on ``fs``."""
    filler = fs / f"filler-{len(list(fs.glob('filler-*')))}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        while (room := _free(fs) - leave) > 0:
            try:
                os.write(fd, b"\0" * min(room, 1 << 20))
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    assert _free(fs) <= leave
    return filler


def _ready(node: NodeProcess) -> tuple[int, dict[str, object]]:
    code, body = request("GET", node.url + "/ready")
    assert isinstance(body, dict), body
    return code, body


def wait_for_event(node: NodeProcess, event: str, timeout: float, what: str) -> None:
    """Wait until ``node`` has logged ``event``; fail naming ``what`` after ``timeout`` s."""
    wait_until(lambda: any(r["event"] == event for r in node.records()), timeout, what)


def _stderr_lines(node: NodeProcess) -> list[str]:
    """The lines of the node's output that are not JSON log records (its stderr)."""
    out = []
    for line in node.logs().splitlines():
        try:
            json.loads(line)
        except ValueError:
            out.append(line)
    return out


def test_a_full_disk_refuses_writes_with_507_keeps_reads_and_recovers(small_fs: Path) -> None:
    node = NodeProcess(small_fs / "data", small_fs.parent / "node.log", QUIET).start()
    try:
        code, body = submit_json(node.url, [b"stored before the disk filled"], wait=True)
        assert code == 200, body
        stored = body["ids"][0]
        filler = fill(small_fs, (FLOOR_MB << 20) // 2)

        wait_until(lambda: _ready(node)[0] == 503, 10, "/ready to report the full disk")
        _, ready = _ready(node)
        reasons = ready["reasons"]
        assert isinstance(reasons, list)
        assert [r.split(":")[0] for r in reasons] == ["disk"]
        assert f"need {FLOOR_MB} MiB" in reasons[0]

        refused = b"refused for lack of space"
        code, body = request("POST", node.url + "/api/v1/transactions", refused)
        assert code == 507, body
        assert body["error"]["code"] == "insufficient_storage"
        assert set(body) == {"error"}
        code, body = submit_json(node.url, [b"a refused batch"])
        assert code == 507, body
        assert body["error"]["code"] == "insufficient_storage"

        # reads go on, and nothing refused was stored
        code, body = request("GET", f"{node.url}/api/v1/transactions/{stored}")
        assert (code, body["status"]) == (200, "final")
        code, _ = request("GET", f"{node.url}/api/v1/transactions/{tx_id(refused).hex()}")
        assert code == 404
        code, body = request("GET", node.url + "/api/v1/log?from=1&limit=10")
        assert (code, body["length"]) == (200, 1)
        assert request("GET", node.url + "/health")[0] == 200

        filler.unlink()
        wait_until(lambda: _ready(node)[0] == 200, 10, "/ready once space is freed")
        code, body = request("POST", node.url + "/api/v1/transactions?wait=final", refused)
        assert code == 200, body
        assert body["ids"] == [tx_id(refused).hex()]

        started = time.monotonic()
        node.signal(signal.SIGTERM)
        assert node.wait(20) == 0, node.logs()
        assert time.monotonic() - started < 10
        assert "Traceback" not in node.logs()
    finally:
        node.kill()


def test_a_write_past_the_reserve_answers_507_and_the_node_goes_on(small_fs: Path) -> None:
    data = small_fs / "data"
    node = NodeProcess(data, small_fs.parent / "node.log", QUIET).start()
    try:
        code, body = submit_json(node.url, [b"stored before the disk filled"], wait=True)
        assert code == 200, body
        filler = fill(small_fs, (FLOOR_MB << 20) + (256 << 10))
        wait_until(lambda: _ready(node)[0] == 200, 10, "/ready just above the floor")
        # one batch passes the free-space check, and is larger than the space left:
        # SQLite's SQLITE_FULL at the write, the transaction rolled back
        big = [os.urandom(60_000) for _ in range(60)]
        code, body = submit_json(node.url, big)
        assert code == 507, body
        assert body["error"]["code"] == "insufficient_storage"
        # the node pauses its writes (until the free space is above the floor: the
        # rolled-back transaction's WAL frames may keep theirs), serves reads, stays up
        wait_for_event(node, "disk_full", 10, "the disk_full log line")
        code, body = request("GET", node.url + "/api/v1/log?from=1&limit=10")
        assert (code, body["length"]) == (200, 1)
        assert node.proc is not None
        assert node.proc.poll() is None
        # once space is freed, it takes its engine back to the state on disk (as a
        # restart would) and takes writes again
        filler.unlink()
        wait_for_event(node, "writes_resumed", 10, "the writes_resumed log line")
        code, body = submit_json(node.url, [b"stored after the full disk"], wait=True)
        assert code == 200, body
        code, body = request("GET", node.url + "/api/v1/log?from=1&limit=10")
        assert (code, body["length"]) == (200, 2)
        code, _ = request("GET", f"{node.url}/api/v1/transactions/{tx_id(big[0]).hex()}")
        assert code == 404  # nothing refused was stored
        assert node.stop() == 0
        assert _stderr_lines(node) == []
        assert "Traceback" not in node.logs()
    finally:
        node.kill()

    node.start()  # the restart sees the same: nothing acknowledged lost, nothing refused
    try:
        code, body = request("GET", node.url + "/api/v1/log?from=1&limit=10")
        assert (code, body["length"]) == (200, 2)
        code, _ = request("GET", f"{node.url}/api/v1/transactions/{tx_id(big[0]).hex()}")
        assert code == 404
        assert node.stop() == 0
    finally:
        node.kill()


def _log_length(node: NodeProcess) -> int:
    code, body = request("GET", node.url + "/api/v1/status")
    assert code == 200, body
    return int(body["log"]["length"])


def _committed_round(node: NodeProcess) -> int:
    """The engine's last committed round (in memory, durable or not)."""
    code, body = request("GET", node.url + "/api/v1/status")
    assert code == 200, body
    return int(body["dag"]["committed_round"])


def test_a_write_that_fails_after_the_engine_moved_on_reports_the_state_on_disk(
    small_fs: Path,
) -> None:
    """The engine does not wait for the disk: here it finalizes a batch while the write
    of the batch waits for the database's write lock (held by the test), and that write
    then fails for lack of space. The node reports the log on disk (one entry), never
    the batch finalized in memory, neither while the write waits nor while writes are
    paused, and after the pause it goes on from there."""
    node = NodeProcess(small_fs / "data", small_fs.parent / "node.log", QUIET).start()
    try:
        code, body = submit_json(node.url, [b"stored before the disk filled"], wait=True)
        assert code == 200, body
        before = _committed_round(node)  # no heartbeats: only the batch commits a leader
        batch = [os.urandom(20_000) for _ in range(10)]
        lock = sqlite3.connect(small_fs / "data" / "qudag.db", isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")  # the node's next write waits for this lock
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                submitted = pool.submit(submit_json, node.url, batch)
                wait_until(lambda: _committed_round(node) > before, 10, "the batch's commit")
                assert _log_length(node) == 1  # final in memory, not on disk: not shown
                filler = fill(small_fs, 0)
                lock.execute("ROLLBACK")
                code, body = submitted.result(timeout=20)
        finally:
            lock.close()
        assert code == 507, body
        assert body["error"]["code"] == "insufficient_storage"
        wait_for_event(node, "disk_full", 10, "the disk_full log line")
        assert _log_length(node) == 1
        code, body = request("GET", node.url + "/api/v1/log?from=1&limit=20")
        assert (code, body["length"], len(body["entries"])) == (200, 1, 1)
        code, _ = request("GET", f"{node.url}/api/v1/transactions/{tx_id(batch[0]).hex()}")
        assert code == 404

        filler.unlink()
        wait_for_event(node, "writes_resumed", 10, "the writes_resumed log line")
        code, body = submit_json(node.url, [b"stored after the full disk"], wait=True)
        assert code == 200, body
        code, body = request("GET", node.url + "/api/v1/log?from=1&limit=20")
        assert (code, body["length"], len(body["entries"])) == (200, 2, 2)
        assert node.stop() == 0
        assert _stderr_lines(node) == []
    finally:
        node.kill()


def test_a_disk_filled_to_the_last_byte_pauses_writes_until_space_is_freed(
    small_fs: Path,
) -> None:
    """The consensus's own writes (a heartbeat vertex every 0.2 s here) find no room at
    all: the node pauses its writes, keeps serving reads, and goes on once space is
    freed, without a restart."""
    env = {**QUIET, "QUDAG_HEARTBEAT_INTERVAL": "0.2"}
    node = NodeProcess(small_fs / "data", small_fs.parent / "node.log", env).start()
    try:
        code, body = submit_json(node.url, [b"stored before the disk filled"], wait=True)
        assert code == 200, body
        stored = body["ids"][0]
        filler = fill(small_fs, 0)
        wait_for_event(node, "disk_full", 30, "a heartbeat's write to fail for lack of space")
        assert node.proc is not None
        assert node.proc.poll() is None
        assert _ready(node)[0] == 503
        assert request("GET", node.url + "/health")[0] == 200
        code, body = request("GET", f"{node.url}/api/v1/transactions/{stored}")
        assert (code, body["status"]) == (200, "final")
        code, body = request("POST", node.url + "/api/v1/transactions", b"refused")
        assert code == 507, body

        filler.unlink()
        wait_until(lambda: _ready(node)[0] == 200, 10, "/ready once space is freed")
        code, body = submit_json(node.url, [b"stored after the space came back"], wait=True)
        assert code == 200, body
        started = time.monotonic()
        assert node.stop() == 0
        assert time.monotonic() - started < 10
        assert _stderr_lines(node) == []
    finally:
        node.kill()


def test_a_restart_below_the_floor_serves_reads_and_refuses_writes(small_fs: Path) -> None:
    data = small_fs / "data"
    node = NodeProcess(data, small_fs.parent / "node.log", QUIET).start()
    code, body = submit_json(node.url, [b"stored before the restart"], wait=True)
    assert code == 200, body
    stored = body["ids"][0]
    assert node.stop() == 0
    fill(small_fs, (FLOOR_MB << 20) // 2)

    node.start(ready=False)
    try:
        code, ready = _ready(node)
        assert code == 503
        assert [str(r).split(":")[0] for r in ready["reasons"]] == ["disk"]  # type: ignore[attr-defined]
        code, body = request("GET", f"{node.url}/api/v1/transactions/{stored}")
        assert (code, body["status"]) == (200, "final")
        code, body = request("POST", node.url + "/api/v1/transactions", b"refused")
        assert code == 507, body
        assert node.stop() == 0
    finally:
        node.kill()


def test_a_restart_on_a_full_disk_exits_1_in_one_line(small_fs: Path) -> None:
    data = small_fs / "data"
    node = NodeProcess(data, small_fs.parent / "node.log", QUIET).start()
    code, body = submit_json(node.url, [b"stored before the restart"], wait=True)
    assert code == 200, body
    assert node.stop() == 0
    fill(small_fs, 0)

    started = time.monotonic()
    result = run_until_exit(data, **QUIET)
    assert result.code == 1, result.stderr
    assert result.stderr.splitlines() == [
        f"qudag-node: node stopped: database {data}: cannot open {data / 'qudag.db'}:"
        " no space left on the device"
    ]
    assert time.monotonic() - started < 30


def test_sigterm_stops_a_node_whose_writes_are_paused(small_fs: Path) -> None:
    env = {**QUIET, "QUDAG_HEARTBEAT_INTERVAL": "0.2"}
    node = NodeProcess(small_fs / "data", small_fs.parent / "node.log", env).start()
    try:
        fill(small_fs, 0)
        wait_for_event(node, "disk_full", 30, "a heartbeat's write to fail for lack of space")
        started = time.monotonic()
        node.signal(signal.SIGTERM)
        assert node.wait(20) == 0, node.logs()
        assert time.monotonic() - started < 10
        assert _stderr_lines(node) == []
        assert node.records()[-1]["event"] == "stopped"
    finally:
        node.kill()


def test_a_validator_out_of_disk_space_pauses_and_rejoins_without_equivocating(
    tmp_path: Path,
) -> None:
    """Four validators; v4 keeps its data on an 8 MiB tmpfs that fills up while the
    others go on: v4's writes of their vertices fail, it pauses, and once space is
    freed it rebuilds its engine from its disk and catches up, to the same log."""
    with (
        mounted_small_fs(tmp_path / "v4") as v4_fs,
        network(tmp_path, QUDAG_MIN_FREE_DISK_MB=str(FLOOR_MB)) as net,
    ):
        for name in net.validators:
            net.start(name, ready=False)
        wait_until(lambda: all(net.is_ready(n) for n in net.validators), 60, "all ready")
        code, body = submit_json(net.members["v1"].url, [b"before"], wait=True)
        assert code == 200, body
        net.wait_converged(at_least=1)

        filler = fill(v4_fs, 0)
        v4 = net.members["v4"].process
        wait_for_event(v4, "disk_full", 30, "v4's writes to fail for lack of space")
        for k in range(5):  # the other three keep finalizing
            code, body = submit_json(net.members["v1"].url, [b"while v4 is full %d" % k])
            assert code == 202, body
        length, _ = net.wait_converged(["v1", "v2", "v3"], at_least=6)
        assert v4.proc is not None
        assert v4.proc.poll() is None  # paused, not stopped
        code, body = request("POST", net.members["v4"].url + "/api/v1/transactions", b"x")
        assert code == 507, body

        filler.unlink()
        wait_for_event(v4, "writes_resumed", 30, "v4 to resume its writes")
        net.wait_converged(at_least=length, timeout=90)
        for member in net.running():
            code, body = request("GET", member.url + "/api/v1/evidence")
            assert code == 200
            assert body["equivocations"] == [], member.name
        assert [line for line in v4.logs().splitlines() if not line.startswith("{")] == []
        net.stop_all()
