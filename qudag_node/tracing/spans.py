"""The node's spans, made with OpenTelemetry: the one module that imports it.

Imported only by :func:`qudag_node.tracing.start_tracing`, once the ``OTEL_*``
variables ask for traces; a node that does not trace never loads it (nor
opentelemetry).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Protocol, TypeVar

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from qudag_node.core.crypto import tx_ids
from qudag_node.core.errors import InputRejected
from qudag_node.core.events import Fact, LeaderCommitted, VertexCertified, VertexStored
from qudag_node.core.messages import MessageType, TransactionsMessage, decode_message
from qudag_node.core.params import Params
from qudag_node.core.types import NodeId, PeerId, TxId, VertexId
from qudag_node.core.wire import Traced, encode_traced, vertex_of

#: Most transactions, vertices and received contexts remembered (oldest forgotten first).
MAX_TRACKED = 65536
#: Most span links on one span.
MAX_LINKS = 64

K = TypeVar("K")
_TRANSACTIONS = bytes((MessageType.TRANSACTIONS,))


class Sender(Protocol):
    """The peer links, as :meth:`Tracing.wrapping` needs them."""

    def send(self, peer: PeerId, data: bytes) -> bool:
        """Queue ``data`` for ``peer``; False if the peer is not linked."""
        ...


def build(node_id: NodeId, exporters: Sequence[str], params: Params) -> Tracing:
    """A :class:`Tracing` whose spans go to ``exporters`` (``otlp``, ``console``), each
    configured by the ``OTEL_*`` variables the OpenTelemetry SDK reads; ``params`` bound
    the forwarded transactions it reads."""
    provider = TracerProvider(resource=_resource(node_id))
    for name in exporters:
        provider.add_span_processor(_processor(name))
    return Tracing(provider, params)


def _resource(node_id: NodeId) -> Resource:
    """``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME``, with the node's id as
    ``service.instance.id`` and ``qudag.node_id``; the service is ``qudag-node`` unless
    named."""
    node = node_id.hex()
    resource = Resource.create({"service.instance.id": node, "qudag.node_id": node})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "qudag-node"}))
    return resource


def _processor(name: str) -> SpanProcessor:
    exporter: SpanExporter = OTLPSpanExporter() if name == "otlp" else ConsoleSpanExporter()
    return BatchSpanProcessor(exporter)


def _remember(table: OrderedDict[K, SpanContext], key: K, context: SpanContext) -> None:
    table[key] = context
    table.move_to_end(key)
    if len(table) > MAX_TRACKED:
        table.popitem(last=False)


def _parent(context: SpanContext | None) -> Context | None:
    return None if context is None else set_span_in_context(NonRecordingSpan(context))


def _links(contexts: Sequence[SpanContext]) -> list[Link]:
    return [Link(c) for c in contexts[:MAX_LINKS]]


def traceparent(context: SpanContext) -> str:
    """The W3C ``traceparent`` of ``context`` (version 00)."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def parse_traceparent(value: str) -> SpanContext:
    """The remote span context of a ``traceparent`` that the wire codec has checked."""
    return SpanContext(
        int(value[3:35], 16),
        int(value[36:52], 16),
        is_remote=True,
        trace_flags=TraceFlags(int(value[53:55], 16)),
    )


class Tracing:
    """The node's spans, and the span contexts they hang from: each traced
    transaction's ``submit`` span, each vertex's latest span, and the contexts that
    arrived with other nodes' vertices."""

    def __init__(self, provider: TracerProvider, params: Params) -> None:
        self._provider = provider
        self._params = params
        self._tracer = provider.get_tracer("qudag_node")
        self._propagator = TraceContextTextMapPropagator()
        self._txs: OrderedDict[TxId, SpanContext] = OrderedDict()
        self._vertices: OrderedDict[VertexId, SpanContext] = OrderedDict()
        self._remote: OrderedDict[VertexId, SpanContext] = OrderedDict()

    def shutdown(self) -> None:
        """Export what is queued and stop (blocks up to the exporter's timeout)."""
        self._provider.shutdown()

    # ------------------------------------------------------------ the API

    @contextmanager
    def submit(self, headers: Mapping[str, str], ids: Sequence[TxId]) -> Iterator[None]:
        """The ``submit`` span around a client's request for the transactions ``ids``,
        child of the request's ``traceparent`` header if any; the transactions' later
        spans hang from it."""
        parent = self._propagator.extract(headers)
        with self._tracer.start_as_current_span(
            "submit",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"qudag.txs": len(ids), "qudag.tx": ids[0].hex() if ids else ""},
        ) as span:
            context = span.get_span_context()
            for tx in ids:
                _remember(self._txs, tx, context)
            yield

    # --------------------------------------------------- the pump and the disk

    def pump_step(self, submissions: Sequence[Sequence[TxId]], started_ns: int) -> None:
        """A ``pump_step`` span from ``started_ns`` to now for a step that admitted
        ``submissions`` (their ids), if any of them is traced."""
        self._step_span("pump_step", submissions, started_ns)

    def group_commit(self, submissions: Sequence[Sequence[TxId]], started_ns: int) -> None:
        """A ``group_commit`` span from ``started_ns`` to now (durable) for the
        ``submissions`` it carried, if any of them is traced."""
        self._step_span("group_commit", submissions, started_ns)

    def _step_span(self, name: str, submissions: Sequence[Sequence[TxId]], start: int) -> None:
        contexts = [c for ids in submissions if ids and (c := self._txs.get(ids[0])) is not None]
        if not contexts:
            return
        span = self._tracer.start_span(
            name,
            context=_parent(contexts[0]),
            links=_links(contexts[1:]),
            start_time=start,
            attributes={"qudag.submissions": len(submissions)},
        )
        span.end()

    def durable(self, facts: Sequence[Fact], started_ns: int) -> None:
        """Spans for a durable step's vertices, certificates and leader commits, from
        ``started_ns`` (its group commit began) to now."""
        for fact in facts:
            match fact:
                case VertexStored(vertex, own):
                    self._vertex(vertex.id, vertex.round, vertex.tx_ids, own, started_ns)
                case VertexCertified(vertex, round_):
                    self._certified(vertex, round_, started_ns)
                case LeaderCommitted():
                    self._committed(fact, started_ns)
                case _:
                    pass

    def _vertex(
        self, vid: VertexId, round_: int, txs: Sequence[TxId], own: bool, start: int
    ) -> None:
        # one link per traced submission it carries (its transactions share a span)
        carried = list(
            {c.span_id: c for tx in txs if (c := self._txs.get(tx)) is not None}.values()
        )
        if own:
            name, parent, links = "propose_vertex", carried[:1], carried
        else:
            remote = self._remote.pop(vid, None)
            name, parent, links = "receive_vertex", [] if remote is None else [remote], carried
        span = self._tracer.start_span(
            name,
            context=_parent(parent[0] if parent else None),
            links=_links(links),
            start_time=start,
            attributes={"qudag.vertex": vid.hex(), "qudag.round": round_, "qudag.txs": len(txs)},
        )
        _remember(self._vertices, vid, span.get_span_context())
        span.end()

    def _certified(self, vid: VertexId, round_: int, start: int) -> None:
        remote = self._remote.pop(vid, None)
        span = self._tracer.start_span(
            "certificate",
            context=_parent(self._vertices.get(vid, remote)),
            links=[] if remote is None else [Link(remote)],
            start_time=start,
            attributes={"qudag.vertex": vid.hex(), "qudag.round": round_},
        )
        _remember(self._vertices, vid, span.get_span_context())
        span.end()

    def _committed(self, fact: LeaderCommitted, start: int) -> None:
        ordered = [c for v in fact.ordered if (c := self._vertices.get(v)) is not None]
        span = self._tracer.start_span(
            "leader_commit",
            context=_parent(self._vertices.get(fact.leader)),
            links=_links(ordered),
            start_time=start,
            attributes={
                "qudag.vertex": fact.leader.hex(),
                "qudag.round": fact.round,
                "qudag.ordered": len(fact.ordered),
                "qudag.entries": len(fact.entries),
            },
        )
        span.end()
        self._final(fact, span.get_span_context(), start)

    def _final(self, fact: LeaderCommitted, commit: SpanContext, start: int) -> None:
        """A ``final`` span per traced transaction, under its ``submit`` span; a
        ``finality`` span per ordered vertex with entries, under the vertex's span."""
        by_vertex: dict[VertexId, list[int]] = {}
        for entry in fact.entries:
            by_vertex.setdefault(entry.vertex, []).append(entry.seq)
            submitted = self._txs.pop(entry.tx_id, None)
            if submitted is not None:
                self._tracer.start_span(
                    "final",
                    context=_parent(submitted),
                    links=[Link(commit)],
                    start_time=start,
                    attributes={"qudag.tx": entry.tx_id.hex(), "qudag.seq": entry.seq},
                ).end()
        for vid, seqs in by_vertex.items():
            self._tracer.start_span(
                "finality",
                context=_parent(self._vertices.get(vid)),
                links=[Link(commit)],
                start_time=start,
                attributes={
                    "qudag.vertex": vid.hex(),
                    "qudag.entries": len(seqs),
                    "qudag.first_seq": seqs[0],
                },
            ).end()

    # ------------------------------------------------------------ the wire

    def received(self, traced: Traced) -> None:
        """A peer's ``TRACED`` frame: remember its context for the vertex it is about,
        or, for transactions an observer forwarded, for each of them that no client of
        this node sent (the vertex that carries them then hangs from it)."""
        context = parse_traceparent(traced.traceparent)
        vid = vertex_of(traced.inner)
        if vid is not None:
            _remember(self._remote, vid, context)
        for tx in self._forwarded(traced.inner):
            if tx not in self._txs:
                _remember(self._txs, tx, context)

    def wrap(self, data: bytes) -> bytes:
        """``data`` in a ``TRACED`` wrapper with its vertex's latest span (or, for
        forwarded transactions, the first traced one's ``submit``), or as it is when it
        is about nothing this node traced."""
        vid = vertex_of(data)
        if vid is not None:
            context = self._vertices.get(vid)
        else:
            traced = (self._txs.get(tx) for tx in self._forwarded(data))
            context = next((c for c in traced if c is not None), None)
        if context is None:
            return data
        return encode_traced(traceparent(context), data)

    def _forwarded(self, data: bytes) -> list[TxId]:
        """The ids of the transactions in a ``TRANSACTIONS`` message; none for another
        or a malformed one."""
        if data[:1] != _TRANSACTIONS:
            return []
        try:
            message = decode_message(data, self._params)
        except InputRejected:
            return []
        return tx_ids(message.transactions) if isinstance(message, TransactionsMessage) else []

    def wrapping(self, links: Sender) -> Sender:
        """``links``, sending each message through :meth:`wrap`."""
        return _WrappingLinks(links, self)


class _WrappingLinks:
    def __init__(self, links: Sender, tracing: Tracing) -> None:
        self._links = links
        self._tracing = tracing

    def send(self, peer: PeerId, data: bytes) -> bool:
        return self._links.send(peer, self._tracing.wrap(data))
