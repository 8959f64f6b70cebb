"""TLS 1.3 for peer links: the node's own certificate, both ends' contexts, and the
stream plumbing that lets a listener see which transport a dialer speaks.

At every start the node makes a fresh Ed25519 key and a self-signed certificate for
it; the key lives only in memory (it touches disk for a moment, in a private temporary
directory, because :meth:`ssl.SSLContext.load_cert_chain` reads files). No CA vouches
for it: the node key does, in the link handshake, whose transcript binds the SHA-256 of
the listener's certificate (RFC 5929's tls-server-end-point; see
:mod:`qudag_node.core.handshake`). The dialer therefore accepts any certificate at the
TLS layer and proves, with the listener, that both see the same one.

Python's :mod:`ssl` cannot accept a self-made *client* certificate without a CA, so the
dialer presents none; it is authenticated by its token MAC and its node key's signature
over that same bound transcript.

The groups offered are OpenSSL's defaults: from OpenSSL 3.5 on, TLS 1.3 offers the
hybrid post-quantum X25519MLKEM768 first.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import socket
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from qudag_node.ports import PeerTls

#: The first byte of a TLS handshake record; a plain link's first frame starts with
#: 0x00 (its length is below 2**24).
TLS_HANDSHAKE_RECORD = 0x16
#: RFC 5280's "no well-defined expiration date": the certificate lives as long as the
#: process, and nobody checks its dates (the node key vouches for it).
_NO_EXPIRY = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
#: Ssl error reasons that say the other end does not speak TLS at all.
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"})


@dataclass(frozen=True, slots=True)
class LinkTls:
    """The node's TLS identity for peer links: a context for each end, and the channel
    binding of its own certificate."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    #: SHA-256 of our certificate (DER): what a dialer must see when it dials us.
    binding: bytes

    @classmethod
    def create(cls, label: str, now: datetime.datetime) -> LinkTls:
        """A fresh key and self-signed certificate named ``label``, valid from ``now``
        (less an hour for clocks behind ours)."""
        key = Ed25519PrivateKey.generate()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, label)])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(_NO_EXPIRY)
            .sign(key, None)
        )
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.minimum_version = ssl.TLSVersion.TLSv1_3
        server.num_tickets = 0  # links are long-lived; no session resumption
        with tempfile.TemporaryDirectory(prefix="qudag-tls-") as directory:
            cert_path, key_path = Path(directory, "cert.pem"), Path(directory, "key.pem")
            cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
            key_path.touch(mode=0o600)
            key_path.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            server.load_cert_chain(cert_path, key_path)
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.minimum_version = ssl.TLSVersion.TLSv1_3
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE  # the node key vouches for the certificate
        der = certificate.public_bytes(serialization.Encoding.DER)
        return cls(server, client, hashlib.sha256(der).digest())


def peer_binding(writer: asyncio.StreamWriter) -> bytes:
    """The channel binding a dialer sees: SHA-256 of the certificate the listener
    presented in this TLS session."""
    der = _ssl_object(writer).getpeercert(binary_form=True)
    if der is None:
        raise ssl.SSLError("the listener presented no certificate")
    return hashlib.sha256(der).digest()


def session_of(writer: asyncio.StreamWriter) -> PeerTls | None:
    """The TLS version, cipher and key-exchange group of a link (the group where the
    Python in use can tell it), or None for a plain link."""
    obj = writer.get_extra_info("ssl_object")
    if obj is None:
        return None
    cipher = obj.cipher()
    group = getattr(obj, "group", None)  # SSLObject.group(): newer Pythons only
    return PeerTls(
        version=obj.version() or "",
        cipher=cipher[0] if cipher else "",
        group=group() if callable(group) else None,
    )


def speaks_plain(error: ssl.SSLError) -> bool:
    """Whether a failed TLS handshake says the other end answered without TLS."""
    return error.reason in _NOT_TLS


async def first_byte(sock: socket.socket) -> int | None:
    """The first byte the peer sent on ``sock`` (non-blocking), left unread for TLS to
    take; None if the peer closed first."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            data = sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            readable = loop.create_future()
            loop.add_reader(sock.fileno(), _set_once, readable)
            try:
                await readable
            finally:
                loop.remove_reader(sock.fileno())
            continue
        return data[0] if data else None


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def accepted_streams(
    sock: socket.socket, context: ssl.SSLContext | None, limit: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Streams over an accepted socket, after a server-side TLS handshake when
    ``context`` is given (the caller bounds its time)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock, ssl=context)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


def _ssl_object(writer: asyncio.StreamWriter) -> ssl.SSLObject:
    obj = writer.get_extra_info("ssl_object")
    if not isinstance(obj, ssl.SSLObject):
        raise ssl.SSLError("not a TLS link")
    return obj
