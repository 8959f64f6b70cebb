"""The benchmark suite keeps working: its pieces, and its scenarios at a tiny scale.

Everything runs for real: node processes on loopback, the load generator in its own
process, the bare aiohttp reference server, strace counting fsync calls.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from bench import suite
from bench.antientropy import python_fingerprints
from bench.attacker import AttackMix, gzip_bomb, oversize_batch
from bench.history import Committee, certified_rounds, persist_history
from bench.ingest import shared_ingest
from bench.lab import Lab, Scale
from bench.loadgen import LoadSpec, quantile, run_load
from bench.nodes import strace_available, sync_calls
from bench.report import Row, markdown
from bench.single import bare_reference
from bench.verify import engine_run
from qudag_node.core.messages import CertifiedMessage, encode_message
from qudag_node.core.syncwire import bucket_span, summarize
from qudag_node.store import Store
from tests.tools import require_tool

#: The smallest settings: every scenario runs in a few seconds.
TINY = Scale(
    name="tiny",
    ingest_seconds=1.5,
    single_seconds=1.0,
    verify_rounds=10,
    antientropy_vertices=400,
    antientropy_rounds=2,
    network_seconds=1.5,
    catchup_transactions=20_000,
    memory_transactions=5_000,
    memory_window=2.0,
    attack_seconds=1.0,
    attack_mix=AttackMix(
        idle=200,
        slow=5,
        slow_interval=0.5,
        bombs=2,
        bomb_bytes=16 << 20,
        batches=1,
        batch_items=100_000,
        batch_bytes=1 << 20,
        pause=0.2,
    ),
)


@pytest.mark.slow
async def test_every_scenario_runs_at_the_smallest_scale(tmp_path: Path) -> None:
    lab = Lab(TINY, tmp_path)
    rows = await suite.run_suite(lab, list(suite.SCENARIOS))
    fsync = ["fsync"] if strace_available() else []
    names = ["ingest", "single", "verify", "antientropy", "network", "catchup", "memory"]
    assert [r.name for r in rows] == [*names, "disk", "wire", *fsync, "ids", "attack"]
    for row in rows:
        assert row.verdict in (("-",) if row.name == "ids" else ("PASS", "MISS"))
        assert row.ratio is None or row.ratio > 0
    table = markdown(rows, "python -m bench --quick", 1.0)
    assert table.startswith("Command: `python -m bench --quick`\nMachine: ")
    assert sum(line.startswith("| ") for line in table.splitlines()) == 1 + len(rows)

    run = await shared_ingest(lab)  # measured once above, read by ingest, disk and ids
    assert run.load.failed == 0
    assert run.stored == run.load.transactions > 0  # everything acknowledged became final
    assert 0 < run.finalized <= run.stored
    assert 1.0 < run.disk_ratio < 4.0  # the database holds at least the raw bytes
    assert run.node_cpu > 0
    if run.fsyncs is not None:
        assert run.fsyncs >= 1  # each commit syncs the write-ahead log


async def test_load_generator_paces_and_measures_latency() -> None:
    spec_rate = 40.0
    result = await bare_reference(0.5)
    assert result.accepted > 100
    assert result.failed == 0
    assert 0 < result.p50 <= result.p99 <= result.max
    assert result.cpu_seconds > 0
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.bare", stdout=asyncio.subprocess.PIPE
    )
    assert server.stdout is not None
    try:
        port = json.loads(await server.stdout.readline())["port"]
        paced = await run_load(
            LoadSpec(
                urls=(f"http://127.0.0.1:{port}",),
                connections=4,
                duration=1.0,
                kind="single",
                rate=spec_rate,
            )
        )
    finally:
        server.terminate()
        await server.wait()
    assert paced.accepted == pytest.approx(spec_rate, abs=2)  # the schedule, not the server
    assert paced.p99 < 0.5


async def test_engine_run_counts_each_signature_once(tmp_path: Path) -> None:
    committee = Committee.generate(4)
    rounds = list(certified_rounds(committee, 6, int(time.time() * 1000) - 60_000))
    messages = [encode_message(CertifiedMessage(v, c)) for made in rounds for v, c in made]
    _, checks, highest = engine_run(committee, messages)
    assert highest == 6
    assert checks == 3 * len(messages)  # author signature + two more votes of the quorum


async def test_fingerprints_agree_with_the_python_loop_over_a_stored_history(
    tmp_path: Path,
) -> None:
    committee = Committee.generate(4)
    written = await persist_history(tmp_path, committee, 30, int(time.time() * 1000) - 60_000)
    assert written == 120
    store = await Store.open(tmp_path, committee.genesis)
    try:
        certified = await store.certified_ids(1, 30)
    finally:
        await store.close()
    assert len(certified) == written
    span = bucket_span(1, 30)
    ours = summarize(certified, 1, 30, span)
    assert sum(ours.counts) == written
    assert python_fingerprints(certified, 1, 30, span) == (
        list(ours.counts),
        list(ours.fingerprints),
    )


def test_sync_calls_counts_fsync_and_fdatasync_in_the_window(tmp_path: Path) -> None:
    strace = require_tool("strace")
    trace, target = tmp_path / "trace", tmp_path / "file"
    program = (
        "import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT);"
        " os.fsync(fd); os.fdatasync(fd); os.fsync(fd)"
    )
    started = time.time()
    subprocess.run(
        [
            *(strace, "-f", "--seccomp-bpf", "-qq", "-ttt", "-o", str(trace)),
            *("-e", "trace=fsync,fdatasync", sys.executable, "-c", program, str(target)),
        ],
        check=True,
        timeout=60,
    )
    assert sync_calls(trace, started, time.time()) == 3
    assert sync_calls(trace, 0.0, started - 1) == 0


def test_only_names_known_scenarios_in_run_order() -> None:
    assert suite.selected("ids,ingest") == ["ingest", "ids"]
    assert suite.selected(None) == list(suite.SCENARIOS)
    with pytest.raises(SystemExit, match="unknown scenario nope"):
        suite.selected("ingest,nope")


def test_rows_say_pass_miss_or_no_goal() -> None:
    assert Row("a", "1", "2", 0.5, "g", True).verdict == "PASS"
    assert Row("a", "1", "2", 0.5, "g", False).verdict == "MISS"
    assert Row("a", "1", "2", None, "none", None).line().endswith("| - | goal none | -")
    assert quantile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert quantile([], 0.99) == 0.0


@pytest.mark.slow
async def test_attack_scenario_runs_at_a_tiny_size_and_prints_its_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = Lab(TINY, tmp_path)
    rows = await suite.run_suite(lab, ["attack"])
    assert [r.name for r in rows] == ["attack"]
    (row,) = rows
    assert row.verdict in ("PASS", "MISS")
    assert row.ratio is not None
    assert row.ratio >= 0
    assert row.figure.endswith("under attack")
    assert row.reference.endswith("without")
    out = capsys.readouterr().out
    assert out.startswith("-- attack ...\nattack ")
    assert "| goal >= 0.7 x |" in out
    mix = TINY.attack_mix
    notes = " ".join(row.notes)
    assert f"{mix.idle} idle sockets ({mix.idle} open at the start" in notes
    assert f"{mix.bombs} gzip bombs" in notes
    assert "/health during the attack: " in notes


def test_attack_bodies_are_what_they_claim() -> None:
    bomb = gzip_bomb(8 << 20)
    assert len(bomb) < (8 << 20) // 500  # a bomb: the wire carries a fraction
    assert zlib.decompress(bomb, 31) == bytes(8 << 20)
    batch = oversize_batch(1000, 64 << 10)
    assert len(batch) == 64 << 10
    assert len(json.loads(batch)["transactions"]) == 1000
