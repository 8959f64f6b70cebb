"""Tracing: when the OTEL_* variables turn it on, and how one node's vertex spans reach
another's through the TRACED wrapper (spans kept in memory; two Tracing objects
stand for two nodes)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from qudag_node.config import ConfigError
from qudag_node.core.crypto import tx_id
from qudag_node.core.events import LeaderCommitted, LogEntry, VertexCertified, VertexStored
from qudag_node.core.messages import ProposalMessage, TransactionsMessage, encode_message
from qudag_node.core.types import PeerId, Seq
from qudag_node.core.wire import TRACED, decode_traced
from qudag_node.tracing import start_tracing, wanted
from qudag_node.tracing.spans import Tracing
from tests.core.support import PARAMS, C

TX = b"a traced transaction"
VERTEX = C.vertex(0, 1, txs=[TX])
PROPOSAL = encode_message(ProposalMessage(VERTEX))


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ],
)
def test_traces_are_on_only_when_the_variables_ask(environ: dict[str, str], on: bool) -> None:
    assert wanted(environ) is on


def test_start_tracing_refuses_what_the_node_cannot_export() -> None:
    node = C.signers[0].node_id
    assert start_tracing(node, PARAMS, {}) is None
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER: zipkin"):
        start_tracing(node, PARAMS, {"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(ConfigError, match="http/protobuf only"):
        start_tracing(
            node, PARAMS, {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        )
    tracing = start_tracing(node, PARAMS, {"OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing is not None
    tracing.shutdown()


class Traced:
    """A node's Tracing with its spans kept in memory."""

    def __init__(self, name: str) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.instance.id": name}))
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracing = Tracing(provider, PARAMS)

    def spans(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]


def parent_of(span: ReadableSpan) -> int:
    """The span id of ``span``'s parent (it must have one)."""
    assert span.parent is not None
    return span.parent.span_id


@pytest.fixture
def nodes() -> Iterator[tuple[Traced, Traced]]:
    one, two = Traced("one"), Traced("two")
    yield one, two
    one.tracing.shutdown()
    two.tracing.shutdown()


def test_a_vertex_span_reaches_the_other_node_through_the_wrapper(
    nodes: tuple[Traced, Traced],
) -> None:
    one, two = nodes
    with one.tracing.submit({}, [tx_id(TX)]):
        pass
    [submit] = one.spans("submit")
    assert one.tracing.wrap(PROPOSAL) == PROPOSAL  # no span for the vertex yet
    one.tracing.pump_step([[tx_id(TX)]], 0)
    one.tracing.group_commit([[tx_id(TX)]], 0)
    one.tracing.durable([VertexStored(VERTEX, own=True)], 0)
    [proposed] = one.spans("propose_vertex")
    assert parent_of(proposed) == submit.context.span_id
    assert [link.context.span_id for link in proposed.links] == [submit.context.span_id]
    for name in ("pump_step", "group_commit"):
        [span] = one.spans(name)
        assert span.context.trace_id == submit.context.trace_id

    sent: list[bytes] = []

    class Links:
        def send(self, peer: PeerId, data: bytes) -> bool:
            sent.append(data)
            return True

    one.tracing.wrapping(Links()).send(PeerId("two"), PROPOSAL)
    [wrapped] = sent
    assert wrapped[0] == TRACED
    traced = decode_traced(wrapped)
    assert traced.inner == PROPOSAL
    assert traced.traceparent.split("-")[2] == f"{proposed.context.span_id:016x}"

    two.tracing.received(traced)
    two.tracing.durable([VertexStored(VERTEX, own=False)], 0)
    two.tracing.durable([VertexCertified(VERTEX.id, 1, C.certificate(VERTEX))], 0)
    entry = LogEntry(Seq(1), tx_id(TX), VERTEX.id, b"\x00" * 32)
    two.tracing.durable([LeaderCommitted(2, VERTEX.id, (VERTEX.id,), (entry,))], 0)
    [received] = two.spans("receive_vertex")
    [certified] = two.spans("certificate")
    [finality] = two.spans("finality")
    assert parent_of(received) == proposed.context.span_id
    assert received.parent is not None
    assert received.parent.is_remote
    assert parent_of(certified) == received.context.span_id
    assert parent_of(finality) == certified.context.span_id
    trace = {s.context.trace_id for s in (submit, received, certified, finality)}
    assert trace == {submit.context.trace_id}
    assert two.spans("final") == []  # no client of this node waited for it


def test_untraced_work_makes_no_step_spans_and_wraps_nothing(
    nodes: tuple[Traced, Traced],
) -> None:
    one, _ = nodes
    one.tracing.pump_step([[tx_id(TX)]], 0)
    one.tracing.group_commit([[tx_id(TX)]], 0)
    assert one.exporter.get_finished_spans() == ()
    assert one.tracing.wrap(PROPOSAL) == PROPOSAL
    assert one.tracing.wrap(b"\x05fetch") == b"\x05fetch"


def test_forwarded_transactions_carry_their_submission_to_the_validator(
    nodes: tuple[Traced, Traced],
) -> None:
    observer, validator = nodes
    with observer.tracing.submit({}, [tx_id(TX)]):
        pass
    [submit] = observer.spans("submit")
    forwarded = encode_message(TransactionsMessage((b"untraced", TX)))
    traced = decode_traced(observer.tracing.wrap(forwarded))
    assert traced.inner == forwarded
    validator.tracing.received(traced)
    validator.tracing.durable([VertexStored(VERTEX, own=True)], 0)
    [proposed] = validator.spans("propose_vertex")
    assert parent_of(proposed) == submit.context.span_id
    assert proposed.context.trace_id == submit.context.trace_id
    assert observer.tracing.wrap(encode_message(TransactionsMessage((b"untraced",)))) == (
        encode_message(TransactionsMessage((b"untraced",)))
    )


def test_a_submit_continues_the_clients_trace(nodes: tuple[Traced, Traced]) -> None:
    one, _ = nodes
    header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with one.tracing.submit({"traceparent": header}, [tx_id(TX)]):
        pass
    [submit] = one.spans("submit")
    assert f"{submit.context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert parent_of(submit) == 0x00F067AA0BA902B7
