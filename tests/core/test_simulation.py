"""The deterministic simulation: safety and liveness over many seeded runs.

Each seed fixes the keys, the fault mix (see :func:`tests.core.sim.random_faults`) and
every delay, loss and duplication. Networks of n = 4 and 7 sign with Ed25519; n = 4
runs again with composite ML-DSA-65 + Ed25519 keys (the same fault mix per seed). Each
network runs a share of the seeds (:data:`NETWORKS`), so that ``make test`` stays
within its time.
Runs are spread over the machine's cores (the sweep's pool, :mod:`tests.core.sweep`);
a failing seed is named with the command that replays it. The module is one
``xdist_group`` (its pool already uses every core), but for the n = 7 network's tests,
which form another: the two run side by side.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qudag_node.core.crypto import Scheme, Signer, extend_log_hash, log_hash_start
from qudag_node.core.engine import Engine
from qudag_node.core.events import LogEntry
from qudag_node.core.genesis import Genesis
from qudag_node.core.types import PeerId, Seq, TxId, VertexId
from qudag_node.pump import Pump, PumpStep
from tests.core import golden
from tests.core.sim import (
    SIM_PARAMS,
    RunResult,
    SimNode,
    check_prefixes,
    run_now,
    run_seed,
    summarize,
)
from tests.core.simstore import MemoryStore
from tests.core.sweep import Timed, describe, main, replay_command, report, run_many, table

#: Seeds per simulated network, from ``QUDAG_SIM_RUNS``: 1,000 in ``make test`` (and by
#: default), 100 in ``make test-fast``; ``make sim`` sweeps more (docs/simulation.md).
RUNS = int(os.environ.get("QUDAG_SIM_RUNS", "1000"))


#: Runs of one network from which on every fault mix is sure to occur among them.
MIX_RUNS = 40


def seeds(network: tuple[int, Scheme, int]) -> range:
    """The seeds ``network`` runs: every ``share``-th below :data:`RUNS` (spread, so
    that the fault mix is the same)."""
    return range(0, RUNS, network[2])


ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.xdist_group("simulation")


#: The networks simulated: (size, scheme, share of the seeds). A run of n = 7 costs
#: three times one of n = 4 (0.8 s against 0.25 s of one core), so it runs every other
#: seed (500 in ``make test``); a composite run signs with ML-DSA-65 (about 1 ms a
#: signature) and costs six times an Ed25519 one: every twentieth (50). The 1,000-seed
#: sweeps of both are ``make sim SWEEP=7:1000`` and ``make sim
#: SIM_SCHEME=mldsa65-ed25519 SWEEP=4:1000`` (docs/simulation.md has their results).
NETWORKS = [(4, Scheme.ED25519, 1), (7, Scheme.ED25519, 2), (4, Scheme.MLDSA65_ED25519, 20)]


def network_id(network: tuple[int, Scheme, int]) -> str:
    """``n=4`` for an Ed25519 network, ``n=4-mldsa65-ed25519`` for another scheme."""
    n, scheme, _ = network
    return f"n={n}" if scheme is Scheme.ED25519 else f"n={n}-{scheme.label}"


#: The costliest network's tests form a group of their own, so that its runs and the
#: others' go on two workers at once instead of one after the other.
_PARAMS = [
    pytest.param(n, marks=pytest.mark.xdist_group("simulation-n7"), id=network_id(n))
    if n[0] == 7
    else pytest.param(n, id=network_id(n))
    for n in NETWORKS
]


@pytest.fixture(scope="module", params=_PARAMS)
def results(request: pytest.FixtureRequest) -> list[RunResult]:
    """Every run of one network size and scheme, computed once for the module."""
    validators, scheme, _ = request.param
    runs = run_many(validators, seeds(request.param), scheme=scheme)
    assert {r.scheme for r in runs} == {scheme}
    print(f"\n{summarize(runs)}")  # shown with pytest -s
    return runs


def test_the_pinned_runs_end_as_golden(results: list[RunResult]) -> None:
    """The runs of ``golden.json``'s seeds end as pinned (:mod:`tests.core.golden`):
    the same log, hash, end time and evidence."""
    first = results[0]
    assert golden.pinned(first.validators, first.scheme)
    changed = golden.changed(first.validators, first.scheme, {r.seed: r for r in results})
    assert not changed, "\n".join(changed)


def test_every_run_is_safe_and_live(results: list[RunResult]) -> None:
    failed = [r for r in results if not (r.safe and r.live)]
    replay = [
        f"seed {r.seed}: {'safe' if r.safe else 'UNSAFE'}, {'live' if r.live else 'NOT LIVE'}"
        f" ({r.detail}); replay: {replay_command(r)}"
        for r in failed
    ]
    assert not failed, "\n".join(replay)
    first = results[0]
    network = next(n for n in NETWORKS if n[:2] == (first.validators, first.scheme))
    assert len(results) == len(seeds(network))


def test_every_fault_kind_is_exercised(results: list[RunResult]) -> None:
    def runs(predicate: str) -> list[RunResult]:
        return [r for r in results if getattr(r.faults, predicate)]

    for kind in (
        "partition",
        "crash",
        "silent",
        "equivocator",
        "wrong_checkpoint",
        "observer",
        "loss",
        "joiner",
    ):
        assert len(runs(kind)) >= len(results) // 10, kind
    # When the equivocator's first vertex can still be certified, the honest node that
    # got the second learns of the first through its certificate: evidence, checked to
    # name the equivocator (see Simulation._checked_evidence). Split evenly, neither
    # is certified and no honest node sees both. Honest runs never produce evidence.
    twin_to_one = [r for r in runs("equivocator") if r.faults.twin_to == "one"]
    assert len(twin_to_one) >= len(results) // 20
    assert all(r.equivocations > 0 for r in twin_to_one)
    assert all(r.equivocations == 0 for r in results if not r.faults.equivocator)
    assert all(r.log_length > 0 and r.latencies for r in results)


def test_a_wrong_checkpoint_signature_is_refused_and_the_right_one_certified(
    results: list[RunResult],
) -> None:
    # Every run's safety result already requires the honest nodes' certified
    # checkpoints to verify and to agree per number (Simulation._result). Here: the
    # validator that signs another digest is refused by honest nodes, which still
    # certify their own checkpoints without it; no honest node ever refuses another.
    wrong = [r for r in results if r.faults.wrong_checkpoint]
    assert all(r.refused_checkpoints > 0 and r.checkpoints > 0 for r in wrong)
    assert all(r.refused_checkpoints == 0 for r in results if not r.faults.wrong_checkpoint)
    assert sum(r.checkpoints > 0 for r in results) >= len(results) * 3 // 4


def test_retention_prunes_and_what_it_keeps_is_enough(results: list[RunResult]) -> None:
    # Every run's safety and liveness already hold with the nodes pruning at each
    # checkpoint they certify (sim.SIM_RETENTION). Here: pruning happened in a share of
    # the runs, among them runs whose crashed validator restarted from its pruned store
    # and runs whose joiner joined from pruning peers.
    pruned = [r for r in results if r.pruned_vertices]
    assert len(pruned) >= len(results) // 10
    if len(results) < MIX_RUNS:
        return  # too few runs to hold every fault mix (make test-fast: 5 composite runs)
    assert any(r.faults.crash is not None for r in pruned)
    assert any(r.state_synced for r in pruned)


@pytest.mark.parametrize("scheme", list(Scheme), ids=lambda s: s.label)
def test_a_seed_replays_identically_whatever_the_hash_seed(scheme: Scheme) -> None:
    # ML-DSA signs hedged (two signatures of one message differ): a composite run must
    # replay all the same, as nothing the network decides depends on a signature's bytes
    command = ["-m", "tests.core.sim", "--seed", "3", "--validators", "4"]
    lines = []
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, *command, "--scheme", scheme.label],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        lines.append(out.splitlines()[0])
    assert lines[0] == lines[1]
    assert f"n=4 {scheme.label} " in lines[0]
    assert "safe=True live=True" in lines[0]
    assert run_seed(3, 4, scheme).log_hash.hex()[:16] in lines[0]


class NoSink:
    """A sink for a pump that never steps (only the node's log is looked at)."""

    async def put(self, step: PumpStep[None]) -> None:
        raise AssertionError("not stepped")

    async def flush(self) -> None:
        raise AssertionError("not stepped")


def _node_with_log(name: str, ids: list[bytes]) -> SimNode:
    genesis = Genesis.solo("qudag-sim", "v0", Signer(b"\x05" * 32).public_key)
    start = log_hash_start(genesis.hash)
    store = MemoryStore(start)
    hashes = extend_log_hash(start, [TxId(i) for i in ids])
    store.log = [
        LogEntry(Seq(k + 1), TxId(i), VertexId(b"\x00" * 32), h)
        for k, (i, h) in enumerate(zip(ids, hashes, strict=True))
    ]
    signer = Signer(b"\x05" * 32)
    pump: Pump[None] = Pump(Engine(genesis, SIM_PARAMS, signer), store, NoSink())
    return SimNode(PeerId(name), signer, pump, store)


def test_the_safety_check_catches_logs_that_are_not_prefixes() -> None:
    a, b, c = (bytes([x]) * 32 for x in (1, 2, 3))
    same = [_node_with_log("x", [a, b]), _node_with_log("y", [a, b, c]), _node_with_log("z", [])]
    assert check_prefixes(same) == (True, "")
    forked = [_node_with_log("x", [a, b]), _node_with_log("y", [a, c, b])]
    assert check_prefixes(forked) == (False, "logs of x and y differ at seq 2")


def test_a_pump_step_that_would_suspend_fails_the_run() -> None:
    async def finishes() -> None:
        return None

    async def suspends() -> None:
        await asyncio.sleep(0)

    run_now(finishes())
    with pytest.raises(AssertionError, match="suspended"):
        run_now(suspends())


def test_the_sweep_reports_each_size_and_names_the_replay_of_a_failure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--runs", "2", "--seed", "3", "--validators", "4", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "n = 4, ed25519: 2 runs, 0 unsafe, 0 not live" in out
    assert "| 4 | ed25519 | 2 | 0 | 0 |" in out
    timed = [
        Timed(run_seed(3, 4), 0.1),
        Timed(dataclasses.replace(run_seed(4, 4), live=False), 0.2),
    ]
    size = report(4, timed, 1.0)
    assert (size.runs, size.unsafe, size.not_live, size.slowest_seconds) == (2, 0, 1, 0.2)
    assert [r.seed for r in size.failures] == [4]
    assert "replay: python -m tests.core.sim --seed 4 --validators 4" in describe(size)
    assert "- `python -m tests.core.sim --seed 4 --validators 4`" in table([size])
    composite = dataclasses.replace(run_seed(4, 4), scheme=Scheme.MLDSA65_ED25519)
    assert replay_command(composite).endswith("--validators 4 --scheme mldsa65-ed25519")
