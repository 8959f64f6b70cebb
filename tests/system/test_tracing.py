"""Traces across nodes: two validator processes export their spans over OTLP/HTTP to
a receiver in this process, and one transaction's spans from both come under one
trace id. Without tracing (not asked for, or the extra not installed) no TRACED
frame ever leaves a node."""

from __future__ import annotations

from pathlib import Path

from qudag_node.core.crypto import Scheme, tx_id
from tests.network import Member, Network, network
from tests.nodeproc import submit_json, wait_until
from tests.otlp import OtlpReceiver, ReceivedSpan

#: The spans a transaction's trace holds on the node it was submitted to (the leader
#: commit that ordered it is in its leader vertex's trace, linked from ``final``).
SUBMITTING_NODE = {"submit", "pump_step", "group_commit", "propose_vertex", "certificate", "final"}


def without_otel(root: Path) -> Path:
    """A directory for ``PYTHONPATH`` whose ``opentelemetry`` fails to import, as in an
    environment without the ``otel`` extra."""
    package = root / "no_otel" / "opentelemetry"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('raise ImportError("no opentelemetry here")\n')
    return package.parent


def start_pair(net: Network) -> tuple[Member, Member]:
    v1, v2 = net.start("v1", ready=False), net.start("v2", ready=False)
    wait_until(lambda: net.is_ready("v1") and net.is_ready("v2"), 60, "both ready")
    return v1, v2


def node_id(member: Member) -> str:
    return str(member.status()["node"]["node_id"])


def test_one_transaction_is_traced_across_two_nodes(tmp_path: Path) -> None:
    with OtlpReceiver() as receiver:
        otel = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        with network(tmp_path, size=2, scheme=Scheme.ED25519, **otel) as net:
            v1, v2 = start_pair(net)
            one, two = node_id(v1), node_id(v2)
            tx = b"traced transaction"
            code, body = submit_json(v1.url, [tx], wait=True)
            assert code == 200, body
            tx_hex = tx_id(tx).hex()

            def final_span() -> ReceivedSpan | None:
                spans = [
                    s
                    for s in receiver.received()
                    if s.name == "final" and s.attributes.get("qudag.tx") == tx_hex
                ]
                return spans[0] if spans else None

            wait_until(lambda: final_span() is not None, 30, "the transaction's final span")
            final = final_span()
            assert final is not None
            assert final.instance == one
            trace = final.trace_id

            def in_trace(instance: str) -> set[str]:
                return {
                    s.name
                    for s in receiver.received()
                    if s.trace_id == trace and s.instance == instance
                }

            wait_until(
                lambda: (
                    in_trace(one) >= SUBMITTING_NODE
                    and {"receive_vertex", "certificate", "finality"} <= in_trace(two)
                ),
                30,
                "the trace's spans from both nodes",
            )
            spans = [s for s in receiver.received() if s.trace_id == trace]
            [submit] = [s for s in spans if s.name == "submit"]
            [proposed] = [s for s in spans if s.name == "propose_vertex"]
            [received] = [s for s in spans if s.name == "receive_vertex"]
            assert submit.attributes["qudag.tx"] == tx_hex
            assert (trace, submit.span_id) in proposed.links  # the vertex links its submission
            assert proposed.parent_span_id == submit.span_id
            # the other node's span hangs from the proposing span, through the wire
            assert received.parent_span_id == proposed.span_id
            assert received.attributes["qudag.vertex"] == proposed.attributes["qudag.vertex"]
            assert {s.service for s in spans} == {"qudag-node"}
            # finality links the leader commit that ordered the vertex, which links it back
            [final_link] = final.links

            def linked() -> list[ReceivedSpan]:
                return [s for s in receiver.received() if (s.trace_id, s.span_id) == final_link]

            wait_until(lambda: bool(linked()), 30, "the leader commit's span")
            [commit] = linked()
            assert (commit.name, commit.instance) == ("leader_commit", one)
            [certified] = [s for s in spans if s.name == "certificate" and s.instance == one]
            assert (trace, certified.span_id) in commit.links
            for member in (v1, v2):
                assert member.metric("qudag_peer_messages_total", {"type": "traced"}) > 0


def test_without_tracing_no_traced_frame_is_sent(tmp_path: Path) -> None:
    with network(tmp_path, size=2, scheme=Scheme.ED25519) as net:
        # v1 asks for traces but cannot import opentelemetry; v2 does not ask
        net.extra_env.update(
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                "PYTHONPATH": str(without_otel(tmp_path)),
            }
        )
        v1 = net.start("v1", ready=False)
        net.extra_env.clear()
        v2 = net.start("v2", ready=False)
        wait_until(lambda: net.is_ready("v1") and net.is_ready("v2"), 60, "both ready")
        for member in (v1, v2):
            code, body = submit_json(member.url, [f"untraced {member.name}".encode()], wait=True)
            assert code == 200, body
        unavailable = [r for r in v1.process.records() if r.get("event") == "tracing_unavailable"]
        assert len(unavailable) == 1
        for member in (v1, v2):
            assert member.metric("qudag_peer_messages_total", {"type": "proposal"}) > 0
            assert member.metric("qudag_peer_messages_total", {"type": "traced"}) == 0
