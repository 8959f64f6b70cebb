"""The benchmark suite keeps working: its pieces, and its scenarios at a tiny scale.

Everything runs for real: node processes on loopback, the load generator in its own
process, the bare aiohttp reference server, strace counting fsync calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import pytest

from bench import suite
from bench.antientropy import python_fingerprints
from bench.attack import attacked_while
from bench.attacker import AttackMix, AttackSpec, gzip_bomb, oversize_batch
from bench.history import Committee, certified_rounds, persist_history
from bench.ingest import shared_ingest
from bench.lab import Lab, Scale
from bench.loadgen import LoadSpec, quantile, run_load
from bench.nodes import (
    Histogram,
    cpu_busy_seconds,
    cpu_seconds,
    strace_available,
    sync_calls,
    thread_cpu_seconds,
)
from bench.pairs import paired_ratio, turns
from bench.ports import ephemeral_range, free_port_block, free_ports
from bench.report import Row, markdown
from bench.single import bare_reference
from bench.stream import measure as measure_stream
from bench.verify import engine_run
from qudag_node.core.crypto import Scheme
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
    tls_pairs=1,
    tracing_pairs=2,
    stream_seconds=1.5,
    stream_pairs=1,
    catchup_transactions=20_000,
    memory_transactions=5_000,
    memory_window=2.0,
    attack_seconds=1.0,
    statesync_transactions=(4_000, 8_000),
    statesync_per_vertex=10,
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
    retention="5s",
    retention_soak_seconds=12.0,
)


#: Scenarios with a test of their own below, left out of the run of all the others.
OWN_TESTS = ("attack", "tls")


async def test_every_scenario_runs_at_the_smallest_scale(tmp_path: Path) -> None:
    lab = Lab(TINY, tmp_path)
    assert set(OWN_TESTS) <= set(suite.SCENARIOS)
    rows = await suite.run_suite(lab, [s for s in suite.SCENARIOS if s not in OWN_TESTS])
    fsync = ["fsync"] if strace_available() else []
    # the rows measured for each scheme: network runs the default of new networks first
    verify = [f"verify ({s.label})" for s in Scheme]
    network = ["network (mldsa65-ed25519)", "network (ed25519)"]
    wire = [f"wire ({s.label})" for s in Scheme]
    names = [
        "ingest",
        "single",
        "tracing",
        *verify,
        "antientropy",
        *network,
        "catchup",
        "statesync",
    ]
    names += ["statesync", "memory"]
    retention = ["retention-disk", "prune-pause", "idle-growth"]
    assert [r.name for r in rows] == [
        *names,
        "disk",
        *wire,
        *fsync,
        "ids",
        *retention,
        "stream",
    ]
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


@pytest.mark.parametrize(
    ("scheme", "per_vertex"), [(Scheme.ED25519, 3), (Scheme.MLDSA65_ED25519, 4)]
)
async def test_engine_run_counts_each_signature_once(scheme: Scheme, per_vertex: int) -> None:
    """The author's signature and the quorum's three votes, its own among them: on
    Ed25519 the author's vote is its vertex signature again (no purpose is signed), so
    it is checked once; a composite vote has a context of its own, so it is another."""
    committee = Committee.generate(4, scheme)
    rounds = list(certified_rounds(committee, 6, int(time.time() * 1000) - 60_000))
    messages = [encode_message(CertifiedMessage(v, c)) for made in rounds for v, c in made]
    _, checks, highest = engine_run(committee, messages)
    assert highest == 6
    assert checks == per_vertex * len(messages)


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


async def test_stream_scenario_delivers_every_entry_to_each_subscriber(tmp_path: Path) -> None:
    run = await measure_stream(tmp_path, TINY.stream_seconds, 5)
    assert run.stored > 0
    assert run.received == (run.stored,) * 5
    assert run.rate > 0
    assert run.writes > 0
    assert run.delay_p99 is not None
    assert 0 < run.delay_p99 <= 5.0
    alone = await measure_stream(tmp_path / "alone", TINY.stream_seconds, 0)
    assert alone.received == ()
    assert alone.delay_p99 is None


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


async def test_tls_scenario_runs_plain_then_tls_and_reads_the_handshakes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = Lab(TINY, tmp_path)
    rows = await suite.run_suite(lab, ["tls"])
    assert [r.name for r in rows] == ["tls"]
    (row,) = rows
    assert row.verdict in ("PASS", "MISS")
    assert row.ratio is not None
    assert row.ratio > 0
    out = capsys.readouterr().out
    run = r"[\d,]+ tx/s \(p50 \d+ ms, p99 \d+ ms\), \d+ µs CPU/tx, paced p50 \d+ ms, p99 \d+ ms"
    run += r", other work [\d.]+ cores"
    assert re.search(rf"pair 1: plain {run}; tls {run}; [\d.]+ x\n", out), out
    notes = " ".join(row.notes)
    timed = re.search(r"TLS handshakes: (\d+) timed", notes)
    assert timed, notes
    assert int(timed.group(1)) >= 12  # six links among four nodes, each timed at both ends
    assert "links: TLSv1.3 TLS_" in notes


def test_histograms_merge_bucket_by_bucket_and_bound_the_slowest() -> None:
    inf = float("inf")
    a = Histogram(2, 0.004, ((0.001, 0), (0.005, 2), (0.01, 2), (inf, 2)))
    b = Histogram(1, 0.008, ((0.001, 0), (0.005, 0), (0.01, 1), (inf, 1)))
    both = Histogram.merged([a, b])
    assert both == Histogram(3, 0.012, ((0.001, 0), (0.005, 2), (0.01, 3), (inf, 3)))
    assert both.mean == pytest.approx(0.004)
    assert a.highest_bound == 0.005
    assert both.highest_bound == 0.01
    assert Histogram(1, 9.0, ((0.01, 0), (inf, 1))).highest_bound == inf
    assert Histogram(0, 0.0, ((inf, 0),)).highest_bound == 0.0
    assert Histogram(0, 0.0, ()).mean == 0.0


def test_attack_bodies_are_what_they_claim() -> None:
    bomb = gzip_bomb(8 << 20)
    assert len(bomb) < (8 << 20) // 500  # a bomb: the wire carries a fraction
    assert zlib.decompress(bomb, 31) == bytes(8 << 20)
    batch = oversize_batch(1000, 64 << 10)
    assert len(batch) == 64 << 10
    assert len(json.loads(batch)["transactions"]) == 1000


def test_cpu_counters_see_a_pinned_busy_process() -> None:
    cpu = sorted(os.sched_getaffinity(0))[0]
    program = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    busy_before = cpu_busy_seconds(cpu)
    spinner = subprocess.Popen(["taskset", "--cpu-list", str(cpu), sys.executable, "-c", program])
    try:
        spinner_cpu = 0.0
        while spinner.poll() is None:
            spinner_cpu = max(spinner_cpu, cpu_seconds(spinner.pid))  # its last reading
            main = thread_cpu_seconds(spinner.pid, spinner.pid)
            assert main <= cpu_seconds(spinner.pid) + 0.02  # a thread's share of its process
    finally:
        spinner.wait(timeout=60)
    assert spinner_cpu >= 0.2
    assert cpu_busy_seconds(cpu) - busy_before >= spinner_cpu - 0.02  # it ran on that CPU
    assert thread_cpu_seconds(spinner.pid, spinner.pid) == 0.0  # gone


async def test_attacker_keeps_up_its_mix_against_a_server_that_defends_itself() -> None:
    """A small real server that closes a connection whose header is not complete within
    0.3 s and refuses every request: the attacker opens idle sockets and slow clients
    again as they are closed, and counts each refusal by its status."""
    closed_unfinished = 0
    answered: Counter[int] = Counter()
    enough = asyncio.Event()  # every kind of attack has been refused, idle ones too

    def note() -> None:
        if closed_unfinished > 2 * mix.idle and answered[415] and answered[400]:
            enough.set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal closed_unfinished
        try:
            async with asyncio.timeout(0.3):
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError):
            closed_unfinished += 1
            writer.close()
            note()
            return
        status = 415 if b"content-encoding: gzip" in head.lower() else 400
        answered[status] += 1
        writer.write(f"HTTP/1.1 {status} No\r\nContent-Length: 0\r\n\r\n".encode())
        writer.close()
        note()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    mix = AttackMix(
        idle=40,
        slow=3,
        slow_interval=0.1,
        bombs=2,
        bomb_bytes=1 << 20,
        batches=1,
        batch_items=1000,
        batch_bytes=64 << 10,
        pause=0.1,
    )

    async def until_each_attack_was_refused() -> None:
        async with asyncio.timeout(30):
            await enough.wait()

    async with server:
        _, seen = await attacked_while(
            AttackSpec(f"http://127.0.0.1:{port}", 60.0, mix), until_each_attack_was_refused
        )
    assert seen.idle_opened == mix.idle
    assert seen.idle_reopened >= 1  # closed idle sockets are opened again
    assert seen.idle_refused == 0
    assert seen.slow_closed >= 1
    assert seen.slow_held < 1.0  # the slow header got nowhere near the end of its trickle
    assert seen.bombs.get("415", 0) >= 1
    assert seen.batches.get("400", 0) >= 1
    assert set(seen.bombs) <= {"415", "closed"}  # a refusal may close before the status


def test_paired_ratio_is_a_geometric_mean_with_its_interval() -> None:
    assert paired_ratio([(2.0, 1.0), (8.0, 4.0)]) == pytest.approx((2.0, 2.0, 2.0))
    ratio, low, high = paired_ratio([(1.0, 1.0), (4.0, 1.0)])
    assert ratio == pytest.approx(2.0)
    assert low < 1.0 < high  # two pairs this far apart: the noise hides a factor 2
    assert high > 2.0


def test_pairs_take_turns_so_that_a_drift_weighs_on_both_kinds_alike() -> None:
    assert turns(4) == [True, False, False, True, True, False, False, True]
    assert turns(1) == [True, False]


def test_free_ports_lie_outside_the_ephemeral_range_and_can_be_bound() -> None:
    ephemeral = ephemeral_range()
    base = free_port_block(4)
    block = range(base, base + 4)
    assert not any(p in ephemeral for p in block)
    with contextlib.ExitStack() as stack:
        for port in block:  # a node can bind each of them
            stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
        other = free_port_block(4, avoid=block)  # held: another block
        assert not set(block) & set(range(other, other + 4))
    ports = free_ports(6)
    assert len(set(ports)) == 6
    assert not any(p in ephemeral for p in ports)
