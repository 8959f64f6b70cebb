"""What TLS peer links cost: four validators under load, plain and TLS in turn.

In the same run, for each of the scale's pairs, ``qudag-node testnet --nodes 4
--peer-transport plain`` and then ``--peer-transport tls`` (plain, tls, plain, tls, ...:
alternating cancels the drift of a shared machine), each measured as the network
scenario measures its testnet (:func:`bench.network.measure_network`): the full load for
the window (8 connections x 1,000 transactions with ``wait=final``), then 2,500 tx/s
offered on a fixed schedule for as long. Per run:

- transactions finalized per second network-wide under the full load, and the finality
  p50 / p99 the clients saw then (a closed loop: its latency is the queue the load
  keeps, about the transactions in flight over the rate),
- the finality p50 / p99 at 2,500 tx/s, each batch timed from its scheduled time: the
  latency the network scenario's goal is about, and this scenario's,
- node CPU per finalized transaction under the full load: all four nodes' CPU time over
  the window divided by the transactions finalized in it,
- the TLS handshakes the nodes timed (``qudag_peer_tls_handshake_seconds``, both ends of
  each link, summed over the four nodes): their mean, and the bucket bound under which
  the slowest fell (there is no timing of the plain handshake to compare with),
- each connected link's transport and TLS parameters as ``/api/v1/peers`` shows them: a
  run whose links are not all of its transport is refused.

The row sets the TLS runs' full-load rate (all their transactions over all their
windows) against the plain runs' (goal >= 0.9 x) and the worst TLS run's paced p99
against 1 s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from bench.lab import Lab
from bench.network import BATCH, CLIENTS, GOAL_RATE, NetworkRun, Phase, measure_network
from bench.nodes import Histogram, Testnet, get_json, histogram, testnet_running
from bench.report import Row, per_second

#: The transports of each pair, in the order they run.
TRANSPORTS = ("plain", "tls")
#: The nodes' histogram of TLS handshake times.
HANDSHAKE_METRIC = "qudag_peer_tls_handshake_seconds"
GOAL_RATIO = 0.9
GOAL_P99 = 1.0
#: Other work on the machine (cores, during a full-load window) past which the row says
#: the comparison is unsound: a tenth of the machine.
OTHER_WORK_LIMIT = 0.1 * (os.cpu_count() or 1)
#: Transactions per second offered on a fixed schedule after the full load: the network
#: scenario's paced load.
PACED_RATE = GOAL_RATE / 2


@dataclass(frozen=True)
class TransportRun:
    """One testnet of one transport measured (full load, then paced), and what its links
    showed."""

    transport: str
    run: NetworkRun
    handshakes: Histogram
    links: tuple[str, ...]  # the distinct TLS parameters of the connected links

    @property
    def rate(self) -> float:
        """Transactions finalized network-wide per second under the full load."""
        return self.run.full.rate

    @property
    def paced(self) -> Phase:
        """The paced phase."""
        assert self.run.paced is not None
        return self.run.paced

    @property
    def cpu_seconds(self) -> float:
        """CPU time all nodes used over the window."""
        return self.run.full.cores * self.run.full.window

    @property
    def cpu_per_tx(self) -> float:
        """Node CPU seconds per finalized transaction."""
        return self.cpu_seconds / max(1, self.run.full.finalized)


@dataclass(frozen=True)
class Pair:
    """A plain run and the TLS run right after it."""

    plain: TransportRun
    tls: TransportRun

    @property
    def ratio(self) -> float:
        """TLS throughput as a multiple of plain."""
        return self.tls.rate / self.plain.rate

    def line(self, index: int) -> str:
        """The pair's figures on one line."""
        return (
            f"   pair {index + 1}: {_run_text(self.plain)}; {_run_text(self.tls)};"
            f" {self.ratio:.2f} x"
        )


def _run_text(run: TransportRun) -> str:
    full, paced = run.run.full.load, run.paced.load
    return (
        f"{run.transport} {per_second(run.rate)} (p50 {full.p50 * 1000:.0f} ms,"
        f" p99 {full.p99 * 1000:.0f} ms), {run.cpu_per_tx * 1e6:.0f} µs CPU/tx,"
        f" paced p50 {paced.p50 * 1000:.0f} ms, p99 {paced.p99 * 1000:.0f} ms,"
        f" other work {run.run.full.other_cores:.2f} cores"
    )


def link_parameters(peers: Sequence[object], transport: str) -> list[str]:
    """The TLS parameters (``version cipher group``) of each connected link in a
    ``/api/v1/peers`` list, after checking that every one runs ``transport``."""
    found = []
    for peer in peers:
        assert isinstance(peer, dict)
        if peer["state"] != "connected":
            continue
        if peer.get("transport") != transport:
            raise RuntimeError(f"a link to {peer['name']} runs {peer.get('transport')}")
        tls = peer.get("tls")
        if tls is not None:
            found.append(f"{tls['version']} {tls['cipher']} {tls['group'] or 'group not shown'}")
    return found


async def transport_run(lab: Lab, transport: str, index: int) -> TransportRun:
    """Four validators linked by ``transport`` under the full load, then paced."""
    net = Testnet(lab.directory(f"tls-{index + 1}-{transport}"), peer_transport=transport)
    async with testnet_running(net) as running:
        run = await measure_network(running, lab.scale.network_seconds, paced_rate=PACED_RATE)
        timeout = aiohttp.ClientTimeout(total=30)
        parts, links = [], set()
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for url in running.urls:
                parts.append(await histogram(session, url, HANDSHAKE_METRIC))
                peers = (await get_json(session, url + "/api/v1/peers"))["peers"]
                assert isinstance(peers, list)
                links.update(link_parameters(peers, transport))
    if not run.logs_equal:
        raise RuntimeError(f"the {transport} testnet's logs differ after the load")
    return TransportRun(transport, run, Histogram.merged(parts), tuple(sorted(links)))


async def scenario(lab: Lab) -> list[Row]:
    """TLS links against plain ones, alternately, in the same run."""
    pairs = []
    for index in range(lab.scale.tls_pairs):
        plain, tls = [await transport_run(lab, t, index) for t in TRANSPORTS]
        pairs.append(Pair(plain, tls))
        print(pairs[-1].line(index), flush=True)
    return [tls_row(pairs)]


def tls_row(pairs: Sequence[Pair]) -> Row:
    """The scenario's row: the TLS runs pooled against the plain runs pooled."""
    plain = [p.plain for p in pairs]
    tls = [p.tls for p in pairs]
    plain_rate, tls_rate = _pooled_rate(plain), _pooled_rate(tls)
    ratio = tls_rate / plain_rate
    worst_p99 = max(r.paced.load.p99 for r in tls)
    full_p99 = max(r.run.full.load.p99 for r in tls)
    handshakes = Histogram.merged([r.handshakes for r in tls])
    window = tls[0].run.full.window
    other = max(r.run.full.other_cores for r in [*plain, *tls])
    unsound = (
        f" (unsound: other work used up to {other:.2f} cores)" if other > OTHER_WORK_LIMIT else ""
    )
    return Row(
        "tls",
        f"{per_second(tls_rate)} finalized over TLS links; at {per_second(PACED_RATE)}"
        f" finality p99 {worst_p99 * 1000:.0f} ms; {_cpu_per_tx(tls) * 1e6:.0f} µs node"
        f" CPU/tx; TLS handshake mean {handshakes.mean * 1000:.1f} ms, max <"
        f" {handshakes.highest_bound * 1000:g} ms{unsound}",
        f"{per_second(plain_rate)} plain, {_cpu_per_tx(plain) * 1e6:.0f} µs node CPU/tx",
        ratio,
        f">= {GOAL_RATIO:g} x; at {per_second(PACED_RATE)} p99 <= {GOAL_P99:g} s",
        ratio >= GOAL_RATIO and worst_p99 <= GOAL_P99,
        (
            f"{len(pairs)} pair(s) of runs in turn (plain, then tls), each four validator"
            f" processes (qudag-node testnet --peer-transport) under {CLIENTS} connections"
            f" x {BATCH}-transaction batches with wait=final for {window:.0f} s, then"
            f" {per_second(PACED_RATE)} offered on a fixed schedule for as long; rates pool"
            " every run of a transport (transactions over windows), the p99 is the worst"
            f" TLS run's at the paced load (at full load it was up to {full_p99 * 1000:.0f}"
            " ms, the queue the closed loop keeps)",
            "other work on the machine: the cores busy during a full-load window (all"
            " CPUs, /proc/stat) less the nodes' and the load generator's CPU; past"
            f" {OTHER_WORK_LIMIT:.2f} cores in any run the figure says unsound",
            "per pair (plain; tls; ratio): "
            + "; ".join(f"{p.plain.rate:,.0f}; {p.tls.rate:,.0f}; {p.ratio:.2f} x" for p in pairs),
            f"node CPU per finalized transaction: all four nodes' CPU time over the full"
            f" load's window over the transactions finalized in it; TLS handshakes:"
            f" {handshakes.count} timed by the nodes (both ends), mean"
            f" {handshakes.mean * 1000:.1f} ms, the slowest under"
            f" {handshakes.highest_bound * 1000:g} ms (the histogram's bucket); links:"
            f" {', '.join(sorted({lnk for r in tls for lnk in r.links})) or 'none'}",
        ),
    )


def _pooled_rate(runs: Sequence[TransportRun]) -> float:
    return sum(r.run.full.finalized for r in runs) / sum(r.run.full.window for r in runs)


def _cpu_per_tx(runs: Sequence[TransportRun]) -> float:
    return sum(r.cpu_seconds for r in runs) / max(1, sum(r.run.full.finalized for r in runs))
