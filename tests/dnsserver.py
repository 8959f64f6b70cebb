"""A small real DNS server for tests: A and AAAA records on loopback, over UDP and TCP.

In the test's event loop::

    server = DnsServer({"qudag-node2.internal": ["fdaa::2", "10.0.0.2"]})
    port = await server.start()
    ...
    server.mode = "drop"  # or "servfail"; "answer" is the default
    await server.stop()

As a process, for tests with several processes::

    python -m tests.dnsserver RECORDS.json

prints ``port N`` once it listens, re-reads RECORDS.json whenever the file changes
(checked at each query; replace it atomically, see :func:`write_records`), and exits
on end of standard input or SIGTERM. RECORDS.json is either ``{name: [address, ...]}``
or ``{"records": {name: [address, ...]}, "mode": "answer" | "servfail" | "drop"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, cast

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

MODES = ("answer", "servfail", "drop")
TTL = 5
START_TIMEOUT = 30.0


def normalize(name: str) -> str:
    """A record key: lower case, without the trailing dot."""
    return name.lower().rstrip(".")


class DnsServer:
    """An authoritative-looking server for whatever names ``records`` holds.

    A queries get a name's IPv4 addresses, AAAA queries its IPv6 ones; a known name
    without addresses of the asked family gets an empty NOERROR answer, an unknown
    name NXDOMAIN. ``mode`` "servfail" answers SERVFAIL to everything, "drop" never
    answers; the names in ``silent`` are never answered whatever the mode. ``queries``
    counts every query received, by (name, type), e.g. ``("qudag-node2.internal",
    "AAAA")``, whatever the mode.
    """

    def __init__(
        self, records: Mapping[str, Sequence[str]] | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.records: dict[str, list[str]] = {k: list(v) for k, v in (records or {}).items()}
        self.mode = "answer"
        self.silent: set[str] = set()
        self.queries: Counter[tuple[str, str]] = Counter()
        self.host = host
        self.port: int | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    @property
    def total_queries(self) -> int:
        """Every query received so far."""
        return sum(self.queries.values())

    def count(self, name: str, rdtype: str | None = None) -> int:
        """Queries received for ``name`` (of type ``rdtype``, or of any type)."""
        key = normalize(name)
        return sum(n for (q, t), n in self.queries.items() if q == key and rdtype in (None, t))

    async def start(self) -> int:
        """Listen on UDP and TCP on one free port of ``host``; return the port."""
        loop = asyncio.get_running_loop()
        for _ in range(20):
            udp, _protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, 0)
            )
            port = int(udp.get_extra_info("sockname")[1])
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port)
            except OSError:  # the port is taken for TCP: try another one
                udp.close()
                continue
            self._udp, self.port = udp, port
            return port
        raise RuntimeError(f"no port on {self.host} is free for both UDP and TCP")

    async def stop(self) -> None:
        """Stop listening; queries after this get no answer."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
            self._tcp = None

    def answer(self, wire: bytes) -> bytes | None:
        """The response to one query in wire format, or None to send nothing."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if query.flags & dns.flags.QR:
            return None  # a response, not a query
        response = dns.message.make_response(query)
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        name = normalize(question.name.to_text())
        self.queries[(name, dns.rdatatype.to_text(question.rdtype))] += 1
        if self.mode == "drop" or name in {normalize(n) for n in self.silent}:
            return None
        if self.mode == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        response.flags |= dns.flags.AA
        known = {normalize(k): v for k, v in self.records.items()}
        if name not in known:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response.to_wire()
        found = _of_type(known[name], question.rdtype)
        if found and question.rdclass == dns.rdataclass.IN:
            rdtype = dns.rdatatype.to_text(question.rdtype)
            response.answer.append(
                dns.rrset.from_text_list(question.name, TTL, "IN", rdtype, found)
            )
        return response.to_wire()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer length-prefixed queries on one TCP connection until it closes."""
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                reply = self.answer(await reader.readexactly(size))
                if reply is not None:
                    writer.write(len(reply).to_bytes(2, "big") + reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _of_type(addresses: Sequence[str], rdtype: int) -> list[str]:
    """The addresses of the family ``rdtype`` asks for (A: IPv4, AAAA: IPv6)."""
    version = {int(dns.rdatatype.A): 4, int(dns.rdatatype.AAAA): 6}.get(rdtype)
    return [a for a in addresses if ipaddress.ip_address(a).version == version]


class _UdpProtocol(asyncio.DatagramProtocol):
    """Hands each datagram to the server and sends back its answer."""

    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        reply = self.server.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


# ------------------------------------------------------------------ as a process


def write_records(path: Path, records: Mapping[str, Sequence[str]], mode: str = "answer") -> None:
    """Replace ``path`` atomically with ``records`` and ``mode``, for a server process."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"records": {k: list(v) for k, v in records.items()}, "mode": mode}))
    os.replace(tmp, path)


def read_records(path: Path) -> tuple[dict[str, list[str]], str]:
    """The records and mode a RECORDS.json file holds; ValueError if it is malformed."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError("RECORDS.json must hold a JSON object")
    mode = "answer"
    if isinstance(data.get("records"), dict) and set(data) <= {"records", "mode"}:
        mode = data.get("mode", "answer")
        data = data["records"]
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    records: dict[str, list[str]] = {}
    for name, addresses in data.items():
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise ValueError(f"the addresses of {name!r} must be a list of strings")
        for address in addresses:
            ipaddress.ip_address(address)
        records[name] = addresses
    return records, mode


class _WatchedServer(DnsServer):
    """A server whose records and mode follow a RECORDS.json file."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self.reload()

    def reload(self) -> None:
        """Read the file again if it changed since the last read."""
        stat = self.path.stat()
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if signature == self._seen:
            return
        self._seen = signature
        self.records, self.mode = read_records(self.path)

    def answer(self, wire: bytes) -> bytes | None:
        try:
            self.reload()
        except (OSError, ValueError) as e:  # keep the last good records
            print(f"dnsserver: cannot read {self.path}: {e}", file=sys.stderr, flush=True)
        return super().answer(wire)


async def _serve(path: Path) -> None:
    """Serve ``path``'s records until standard input ends or SIGTERM arrives."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def wait_for_eof() -> None:
        # The raw descriptor: a buffered reader's lock would stall interpreter shutdown.
        while os.read(sys.stdin.fileno(), 4096):
            pass
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_eof, name="stdin", daemon=True).start()
    server = _WatchedServer(path)
    port = await server.start()
    print(f"port {port}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()


class DnsServerProcess:
    """``python -m tests.dnsserver RECORDS.json`` as a child process."""

    def __init__(self, records_path: Path) -> None:
        self.records_path = records_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    def start(self) -> int:
        """Start the process and return the port it listens on."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.dnsserver", str(self.records_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[1],
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().split()
        if len(line) != 2 or line[0] != "port":
            self.stop()
            raise AssertionError(f"the DNS server process did not start: {line!r}")
        self.port = int(line[1])
        return self.port

    def stop(self) -> int:
        """Close its standard input, wait for it to exit, and return its exit code."""
        assert self.proc is not None, "not started"
        stdin: IO[bytes] | None = self.proc.stdin
        if stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                stdin.close()
        try:
            return self.proc.wait(START_TIMEOUT)
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()


def main(argv: Sequence[str]) -> int:
    """Entry point: ``python -m tests.dnsserver RECORDS.json``."""
    if len(argv) != 1:
        print("usage: python -m tests.dnsserver RECORDS.json", file=sys.stderr)
        return 2
    path = Path(argv[0])
    try:
        read_records(path)
    except (OSError, ValueError) as e:
        print(f"dnsserver: cannot read {path}: {e}", file=sys.stderr)
        return 2
    asyncio.run(_serve(path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
