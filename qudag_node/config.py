"""Settings: defaults < TOML file < environment < command-line flags.

Every setting is declared once, as a field of :class:`Settings` made with
:func:`setting` (its type, variable, default, parser and help together); the table
:data:`SETTINGS` derived from those fields drives the file keys, the environment names,
the command-line flags, validation, redaction and the docs check. Invalid
values stop the start with one line naming the setting and where it came from.
Secret values are wrapped in :class:`Secret` and never printed.
"""

from __future__ import annotations

import errno
import ipaddress
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, cast, dataclass_transform

from qudag_node.core.crypto import DEFAULT_SCHEME, Scheme, scheme_of_public_key
from qudag_node.core.genesis import NAME_RULE, Genesis, Validator, is_valid_name
from qudag_node.core.params import Params
from qudag_node.core.retention import Retention, parse_retention
from qudag_node.core.types import PublicKey
from qudag_node.genesis_file import (
    GenesisFileError,
    genesis_from_json,
    parse_validator_list,
    validators_genesis,
)

T = TypeVar("T")
C = TypeVar("C")


class ConfigError(Exception):
    """A setting has an invalid value; the message names it and never shows a secret."""


#: The transports of peer links (``QUDAG_PEER_TRANSPORT``), the default first.
PEER_TRANSPORTS = ("tls", "plain")
#: Largest file a setting may name (a TOML file, a genesis file, a node key).
MAX_SETTINGS_FILE_BYTES = 1 << 20
#: What :func:`read_small_file` calls a file of each kind that is not a regular file.
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def file_kind(mode: int) -> str:
    """How to name a file of ``mode`` (from ``stat``) in an error: "a directory", ..."""
    for test, kind in _FILE_KINDS:
        if test(mode):
            return kind
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def read_small_file(path: Path, limit: int = MAX_SETTINGS_FILE_BYTES) -> bytes:
    """The bytes of the regular file ``path`` (a symlink to one is followed), at most
    ``limit``. Never blocks: a FIFO or a device is opened without waiting for a writer
    and refused, as are a directory and a dangling symlink, with an :class:`OSError`
    whose ``strerror`` says which, in one line."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        if os.path.islink(path):
            raise OSError(errno.EINVAL, "a dangling symlink") from None  # not "missing"
        raise
    except IsADirectoryError:
        raise OSError(errno.EISDIR, "a directory, not a file") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"{file_kind(mode)}, not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= limit and (chunk := os.read(fd, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes")
    return data


class Secret:
    """A secret string: printing it shows ``***``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


_PRIVATE_KEY = re.compile(r"[0-9a-fA-F]{64}|[0-9a-fA-F]{128}")
_LEVELS = ("debug", "info", "warning", "error", "critical")


def _int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip().replace("_", ""))
        except ValueError:
            raise ValueError(f"must be a whole number from {lo} to {hi}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be a whole number from {lo} to {hi}")
        return value

    return parse


def _seconds(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        text = raw.strip().removesuffix("s")
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"must be a number of seconds from {lo} to {hi}") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise ValueError(f"must be a number of seconds from {lo} to {hi}")
        return value

    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"must be one of: {', '.join(options)}")
        return value

    return parse


def _optional_retention(raw: str) -> Retention | None:
    return parse_retention(raw) if raw.strip() else None


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("true", "false"):
        raise ValueError("must be true or false")
    return value == "true"


def _rate(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("must be a number of requests a second from 0 (off) to 1000000") from None
    if not math.isfinite(value) or not 0 <= value <= 1_000_000:
        raise ValueError("must be a number of requests a second from 0 (off) to 1000000")
    return value


def _name(raw: str) -> str:
    value = raw.strip()
    if not is_valid_name(value):
        raise ValueError(f"must be {NAME_RULE}")
    return value


def _optional_name(raw: str) -> str:
    return "" if not raw.strip() else _name(raw)


def _text(raw: str) -> str:
    return raw.strip()


def _private_key(raw: str) -> Secret:
    value = raw.strip()
    if not _PRIVATE_KEY.fullmatch(value):
        raise ValueError(
            "must be 64 hex characters (an Ed25519 private key) or 128"
            " (an ML-DSA-65 + Ed25519 one); make one with: qudag-node keygen"
        )
    return Secret(value.lower())


def _check_key_scheme(genesis: Genesis, own_key: bytes) -> None:
    """Refuse a node key of another scheme than its network's."""
    ours = scheme_of_public_key(own_key)
    if ours is not genesis.scheme:
        raise ConfigError(
            f"the node key is a {ours.label} key but the network signs with"
            f" {genesis.scheme.label}: give NODE_PRIVATE_KEY a key made with"
            f" qudag-node keygen --scheme {genesis.scheme.label}"
        )


#: Least strength of the peer token: the dialer's proof goes to whoever answers at a
#: peer's address, and may be tested against guesses offline.
MIN_TOKEN_BITS = 128
#: Fewest distinct characters in a peer token (a random one of 32 hex has about 14).
MIN_TOKEN_SYMBOLS = 8
_HEX_TEXT = re.compile(r"[0-9a-fA-F]+")
_GENERATE_HINT = "generate one with: openssl rand -hex 32"


def token_bits(value: str) -> int:
    """The most bits of randomness ``value`` can hold: 4 a character for hex, 6 for
    base64 (padding aside) or any other text."""
    if _HEX_TEXT.fullmatch(value):
        return 4 * len(value)
    return 6 * len(value.rstrip("="))


def _token(raw: str) -> Secret:
    value = raw.strip()
    if token_bits(value) < MIN_TOKEN_BITS:
        raise ValueError(
            f"is shorter than {MIN_TOKEN_BITS} bits: use 32 or more hex or 22 or more base64"
            f" characters of random data ({_GENERATE_HINT})"
        )
    if len(set(value)) < MIN_TOKEN_SYMBOLS:
        raise ValueError(
            f"is too easy to guess: it uses fewer than {MIN_TOKEN_SYMBOLS} distinct"
            f" characters ({_GENERATE_HINT})"
        )
    if value in (value + value)[1:-1]:
        raise ValueError(f"is too easy to guess: it repeats one short pattern ({_GENERATE_HINT})")
    return Secret(value)


DNS_PORT = 53


def parse_dns_server(entry: str) -> tuple[str, int]:
    """A DNS server entry, ``ip``, ``ip:port`` or ``[v6]:port``, as (ip, port)."""
    text = entry.strip()
    host, port = text, str(DNS_PORT)
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise ValueError(f"DNS server {entry!r} is not ip, ip:port or [ip]:port")
        port = rest[1:] or port  # "[ip]" and "[ip]:" mean the default port
    elif text.count(":") == 1:
        host, port = text.split(":")
    address = ip_literal(host)
    if address is None or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"DNS server {entry!r} is not ip, ip:port or [ip]:port")
    return address, int(port)


def parse_peer_entry(entry: str) -> tuple[str, int]:
    """A peer entry, ``host:port`` or ``[v6]:port``, as (host without brackets, port)."""
    host, sep, port = entry.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"peer entry {entry!r} is not host:port")
    return host, int(port)


def ip_literal(host: str) -> str | None:
    """``host`` as a normalised IP address if it is one (brackets allowed), else None."""
    try:
        return str(ipaddress.ip_address(host.removeprefix("[").removesuffix("]")))
    except ValueError:
        return None


def _peer_list(raw: str) -> tuple[str, ...]:
    items = [p.strip() for p in raw.replace("\n", ",").split(",")]
    for item in items:
        if item:
            parse_peer_entry(item)
    return tuple(item for item in items if item)


def _server_list(raw: str) -> tuple[str, ...]:
    items = [p.strip() for p in raw.split(",")]
    for item in items:
        if item:
            parse_dns_server(item)
    return tuple(item for item in items if item)


@dataclass(frozen=True, slots=True)
class Setting:
    """How one field of :class:`Settings` is read: its variable, default text, parser,
    help line, and whether it is a secret (environment only, never shown)."""

    name: str
    env: str
    default: str
    parse: Callable[[str], Any]
    help: str
    secret: bool = False


def setting(
    *,
    env: str,
    default_text: str,
    parse: Callable[[str], T],
    help: str,
    secret: bool = False,
) -> T:
    """Declare a field of :class:`Settings` read from the environment variable ``env``,
    the file key and flag named after the field, or ``default_text``; ``parse`` turns
    the text into the field's value (mypy checks its type against the field's) or raises
    :class:`ValueError` saying what is wrong. A ``secret`` is read only from the
    environment, empty means unset (``None``), and it is never shown."""
    read = {"env": env, "default": default_text, "parse": parse, "help": help, "secret": secret}
    return cast(T, field(metadata=read))


@dataclass_transform(frozen_default=True, field_specifiers=(setting,))
def _settings_class(cls: type[C]) -> type[C]:
    """Make ``cls`` a frozen dataclass whose fields may be declared with :func:`setting`."""
    return dataclass(frozen=True, slots=True)(cls)


#: Fly's own variables, read when present and shown in status and logs.
PLATFORM_ENV = ("FLY_APP_NAME", "FLY_REGION", "FLY_MACHINE_ID", "FLY_PRIVATE_IP")


@_settings_class
class Settings:
    """The node's effective configuration. Each field declared with :func:`setting` is a
    setting: that declaration is the only one; :data:`SETTINGS` and everything built
    on it (file keys, variables, flags, validation, redaction, the docs check) follow."""

    node_id: str = setting(
        env="NODE_ID",
        default_text="node1",
        parse=_name,
        help="Name of this node (logs, status, genesis).",
    )
    network_mode: str = setting(
        env="NETWORK_MODE",
        default_text="local",
        parse=_choice("local", "testnet"),
        help="Which network this node joins; the default network id is qudag-<mode>.",
    )
    network_id: str = setting(
        env="QUDAG_NETWORK_ID",
        default_text="",
        parse=_optional_name,
        help="Network id bound into the genesis; empty means qudag-<NETWORK_MODE>.",
    )
    genesis_file: str = setting(
        env="QUDAG_GENESIS",
        default_text="",
        parse=_text,
        help="Genesis file (JSON) defining the network id and validator set.",
    )
    validators: tuple[Validator, ...] = setting(
        env="QUDAG_VALIDATORS",
        default_text="",
        parse=parse_validator_list,
        help="Validator set as name=public_key,... (not with QUDAG_GENESIS);"
        " empty: this node alone.",
    )
    dag_sync_interval: float = setting(
        env="DAG_SYNC_INTERVAL",
        default_text="30",
        parse=_seconds(0.1, 3600),
        help="Seconds between anti-entropy rounds and peer name re-resolution.",
    )
    state_sync: str = setting(
        env="QUDAG_STATE_SYNC",
        default_text="on",
        parse=_choice("on", "off"),
        help="on: a node far behind (or empty) joins from a peer's certified checkpoint;"
        " off: it replays the whole history.",
    )
    backfill: str = setting(
        env="QUDAG_BACKFILL",
        default_text="on",
        parse=_choice("on", "off"),
        help="on: after joining from a checkpoint, fetch the log before it from peers that"
        " hold it; off: the log before it stays pruned here.",
    )
    log_level: str = setting(
        env="LOG_LEVEL",
        default_text="info",
        parse=_choice(*_LEVELS),
        help="Least severe log level written.",
    )
    log_format: str = setting(
        env="QUDAG_LOG_FORMAT",
        default_text="auto",
        parse=_choice("auto", "json", "console"),
        help="auto: readable on a terminal, JSON lines otherwise.",
    )
    node_private_key: Secret | None = setting(
        env="NODE_PRIVATE_KEY",
        default_text="",
        parse=_private_key,
        help="Private key: 128 hex (mldsa65-ed25519) or 64 (ed25519)."
        " Unset: generated once, kept in DATA_DIR/node.key.",
        secret=True,
    )
    peer_auth_token: Secret | None = setting(
        env="PEER_AUTH_TOKEN",
        default_text="",
        parse=_token,
        help="Shared secret peers prove knowledge of when linking (128+ bits: 32+ hex characters).",
        secret=True,
    )
    peer_auth_token_previous: Secret | None = setting(
        env="PEER_AUTH_TOKEN_PREVIOUS",
        default_text="",
        parse=_token,
        help="During a token rotation: the old PEER_AUTH_TOKEN, still accepted from dialing peers.",
        secret=True,
    )
    peer_transport: str = setting(
        env="QUDAG_PEER_TRANSPORT",
        default_text="tls",
        parse=_choice(*PEER_TRANSPORTS),
        help="tls: peer links run inside TLS 1.3 bound to the link handshake; plain: bare"
        " TCP. Every node of a network must use the same.",
    )
    api_token: Secret | None = setting(
        env="QUDAG_API_TOKEN",
        default_text="",
        parse=_token,
        help="Bearer token that writes to the HTTP API must carry (128+ bits); unset: none.",
        secret=True,
    )
    data_dir: str = setting(
        env="QUDAG_DATA_DIR",
        default_text="./data",
        parse=_text,
        help="Directory holding the database.",
    )
    api_host: str = setting(
        env="QUDAG_API_HOST",
        default_text="",
        parse=_text,
        help="Address the HTTP API binds; empty means every IPv4 and IPv6 interface.",
    )
    api_port: int = setting(
        env="QUDAG_API_PORT",
        default_text="8080",
        parse=_int(0, 65535),
        help="HTTP API port (0 = any).",
    )
    api_write_rate: float = setting(
        env="QUDAG_API_WRITE_RATE",
        default_text="0",
        parse=_rate,
        help="Writes a second allowed to one client address (token bucket); 0 turns the limit off.",
    )
    api_write_burst: int = setting(
        env="QUDAG_API_WRITE_BURST",
        default_text="100",
        parse=_int(1, 1_000_000),
        help="Writes one client may send at once before QUDAG_API_WRITE_RATE applies.",
    )
    api_clients: int = setting(
        env="QUDAG_API_CLIENTS",
        default_text="10000",
        parse=_int(1, 1_000_000),
        help="Most client addresses whose write rate is tracked; the least recent go first.",
    )
    api_trust_fly_client_ip: bool = setting(
        env="QUDAG_API_TRUST_FLY_CLIENT_IP",
        default_text="false",
        parse=_bool,
        help="Count writes under the Fly-Client-IP header (only behind Fly's proxy).",
    )
    p2p_port: int = setting(
        env="QUDAG_P2P_PORT",
        default_text="7000",
        parse=_int(0, 65535),
        help="Peer port (0 = any).",
    )
    peers: tuple[str, ...] = setting(
        env="QUDAG_PEERS",
        default_text="",
        parse=_peer_list,
        help="Comma-separated host:port peers; a host may resolve to several addresses.",
    )
    dns_servers: tuple[str, ...] = setting(
        env="QUDAG_DNS_SERVERS",
        default_text="",
        parse=_server_list,
        help="DNS servers (ip or ip:port, comma-separated) for peer names; empty: the system's.",
    )
    peer_queue_bytes: int = setting(
        env="QUDAG_PEER_QUEUE_BYTES",
        default_text=str(16 << 20),
        parse=_int(64 << 10, 1 << 30),
        help="Most bytes queued for one peer; a peer that lets more pile up is dropped.",
    )
    max_tx_bytes: int = setting(
        env="QUDAG_MAX_TX_BYTES",
        default_text="65536",
        parse=_int(1, 1 << 20),
        help="Largest accepted transaction, in bytes.",
    )
    max_body_bytes: int = setting(
        env="QUDAG_MAX_BODY_BYTES",
        default_text=str(16 << 20),
        parse=_int(1024, 1 << 30),
        help="Largest accepted HTTP request body, in bytes.",
    )
    http_header_timeout: float = setting(
        env="QUDAG_HTTP_HEADER_TIMEOUT",
        default_text="10",
        parse=_seconds(0.1, 600),
        help="Longest time from a request's first byte to the end of its headers.",
    )
    http_body_timeout: float = setting(
        env="QUDAG_HTTP_BODY_TIMEOUT",
        default_text="10",
        parse=_seconds(0.1, 600),
        help="Longest a request body may go without a byte arriving.",
    )
    http_min_body_rate: int = setting(
        env="QUDAG_HTTP_MIN_BODY_RATE",
        default_text="4096",
        parse=_int(0, 1 << 30),
        help="Slowest average body rate in bytes/s, enforced after the body timeout (0: none).",
    )
    http_idle_timeout: float = setting(
        env="QUDAG_HTTP_IDLE_TIMEOUT",
        default_text="75",
        parse=_seconds(0.1, 3600),
        help="Longest an API connection may wait for the first byte of its next request.",
    )
    max_api_connections: int = setting(
        env="QUDAG_MAX_API_CONNECTIONS",
        default_text="0",
        parse=_int(0, 1_000_000),
        help="Most open API connections; 0: derived from the descriptor limit (RLIMIT_NOFILE).",
    )
    stream_max_subscribers: int = setting(
        env="QUDAG_STREAM_MAX_SUBSCRIBERS",
        default_text="256",
        parse=_int(0, 100_000),
        help="Most clients subscribed to GET /api/v1/stream at once; beyond, 503.",
    )
    max_submit_txs: int = setting(
        env="QUDAG_MAX_SUBMIT_TXS",
        default_text="10000",
        parse=_int(1, 1_000_000),
        help="Most transactions in one submit request.",
    )
    max_pending: int = setting(
        env="QUDAG_MAX_PENDING",
        default_text="100000",
        parse=_int(1, 10_000_000),
        help="Most transactions waiting for a vertex; beyond it submits get 503.",
    )
    max_vertex_txs: int = setting(
        env="QUDAG_MAX_VERTEX_TXS",
        default_text="10000",
        parse=_int(1, 1_000_000),
        help="Most transactions in one vertex.",
    )
    min_round_interval: float = setting(
        env="QUDAG_MIN_ROUND_INTERVAL",
        default_text="0.05",
        parse=_seconds(0, 60),
        help="Shortest time between two rounds of this node.",
    )
    heartbeat_interval: float = setting(
        env="QUDAG_HEARTBEAT_INTERVAL",
        default_text="10",
        parse=_seconds(0.01, 3600),
        help="Longest time between rounds while idle.",
    )
    leader_timeout: float = setting(
        env="QUDAG_LEADER_TIMEOUT",
        default_text="2",
        parse=_seconds(0.01, 600),
        help="How long a round waits for its leader's vertex.",
    )
    checkpoint_interval: int = setting(
        env="QUDAG_CHECKPOINT_INTERVAL",
        default_text="100",
        parse=_int(2, 1_000_000),
        help="Rounds between two checkpoints; the same on every node of a network.",
    )
    wait_timeout: float = setting(
        env="QUDAG_WAIT_TIMEOUT",
        default_text="30",
        parse=_seconds(0.1, 600),
        help="Default and largest timeout of a submit with wait=final.",
    )
    min_free_disk_mb: int = setting(
        env="QUDAG_MIN_FREE_DISK_MB",
        default_text="64",
        parse=_int(0, 1 << 20),
        help="Below this much free space in DATA_DIR the node refuses client writes (507) and"
        " reports not ready; the space left is the consensus's reserve.",
    )
    retention: Retention = setting(
        env="QUDAG_RETENTION",
        default_text="archive",
        parse=parse_retention,
        help="How long the DAG (vertices, certificates, evidence, checkpoints) is kept once"
        " final: archive (everything), a number of rounds (50000rounds) or an age (30m, 12h,"
        " 7d), counted back from the latest certified checkpoint.",
    )
    tx_retention: Retention | None = setting(
        env="QUDAG_TX_RETENTION",
        default_text="",
        parse=_optional_retention,
        help="How long transaction bytes and log entries are kept once final, in the forms of"
        " QUDAG_RETENTION; never shorter than it. Empty: the same as QUDAG_RETENTION.",
    )
    shutdown_timeout: float = setting(
        env="QUDAG_SHUTDOWN_TIMEOUT",
        default_text="20",
        parse=_seconds(1, 300),
        help="Longest clean shutdown before giving up (keep under Fly's kill_timeout).",
    )
    platform: tuple[tuple[str, str], ...] = ()

    @property
    def effective_network_id(self) -> str:
        """The network id, defaulting to ``qudag-<network_mode>``."""
        return self.network_id or f"qudag-{self.network_mode}"

    @property
    def data_path(self) -> Path:
        """The data directory as a path."""
        return Path(self.data_dir)

    @property
    def kept_transactions(self) -> Retention:
        """How long transaction bytes and log entries are kept (QUDAG_TX_RETENTION, by
        default QUDAG_RETENTION)."""
        return self.retention if self.tx_retention is None else self.tx_retention

    def genesis(self, own_key: bytes) -> Genesis:
        """The network's genesis: from QUDAG_GENESIS, else QUDAG_VALIDATORS, else solo.

        Without either setting the network is this node alone: one validator named
        ``node_id`` with ``own_key``. Raises :class:`ConfigError`.
        """
        if self.genesis_file:
            genesis = self._genesis_from_file()
        else:
            try:
                if self.validators:
                    genesis = validators_genesis(self.effective_network_id, self.validators)
                else:
                    genesis = Genesis.solo(
                        self.effective_network_id, self.node_id, PublicKey(own_key)
                    )
            except ValueError as e:
                raise ConfigError(f"invalid genesis: {e}") from None
        _check_key_scheme(genesis, own_key)
        return genesis

    def key_scheme(self) -> Scheme:
        """The scheme of a node key made now: the configured network's, else the default
        of new networks. Raises :class:`ConfigError`."""
        if self.genesis_file:
            return self._genesis_from_file().scheme
        if self.validators:
            return scheme_of_public_key(self.validators[0].public_key)
        return DEFAULT_SCHEME

    def _genesis_from_file(self) -> Genesis:
        path = self.genesis_file
        try:
            text = read_small_file(Path(path)).decode("utf-8")
        except FileNotFoundError:
            raise ConfigError(f"invalid QUDAG_GENESIS: genesis file {path}: not found") from None
        except UnicodeDecodeError:
            raise ConfigError(
                f"invalid QUDAG_GENESIS: genesis file {path}: not UTF-8 text"
            ) from None
        except OSError as e:
            raise ConfigError(f"invalid QUDAG_GENESIS: genesis file {path}: {e.strerror}") from None
        try:
            genesis = genesis_from_json(text, path)
        except GenesisFileError as e:
            raise ConfigError(f"invalid QUDAG_GENESIS: {e}") from None
        if self.network_id and self.network_id != genesis.network_id:
            raise ConfigError(
                f"QUDAG_NETWORK_ID is {self.network_id!r} but genesis file {path} is for "
                f"network {genesis.network_id!r}; unset QUDAG_NETWORK_ID or use another file"
            )
        return genesis

    def engine_params(self) -> Params:
        """The core's parameters derived from these settings."""
        return Params(
            max_tx_bytes=self.max_tx_bytes,
            max_vertex_txs=self.max_vertex_txs,
            max_vertex_bytes=max(4 << 20, self.max_tx_bytes),
            max_pending=self.max_pending,
            min_round_interval=self.min_round_interval,
            heartbeat_interval=self.heartbeat_interval,
            leader_timeout=self.leader_timeout,
            checkpoint_interval=self.checkpoint_interval,
        )

    def redacted(self) -> dict[str, Any]:
        """Every setting as JSON-ready values, secrets shown only as set or unset."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Secret):
                value = "<set>"
            elif value is None and f.name in BY_NAME and BY_NAME[f.name].secret:
                value = "<unset>"
            elif isinstance(value, Retention):
                value = str(value)
            elif isinstance(value, tuple) and f.name == "platform":
                value = dict(value)
            elif isinstance(value, tuple) and f.name == "validators":
                value = [{"name": v.name, "public_key": v.public_key.hex()} for v in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


#: Every setting, in the order of the fields of :class:`Settings`.
SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, **f.metadata) for f in fields(Settings) if f.metadata
)
BY_NAME = {s.name: s for s in SETTINGS}


def _from_file(path: Path) -> dict[str, str]:
    try:
        data = tomllib.loads(read_small_file(path).decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not UTF-8 text") from None
    except RecursionError:
        raise ConfigError(f"config file {path}: nested too deeply") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: {e}") from None
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror}") from None
    out = {}
    for key, value in data.items():
        if key not in BY_NAME:
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
        if BY_NAME[key].secret:
            raise ConfigError(
                f"config file {path}: {key} is a secret; set {BY_NAME[key].env} in the environment"
            )
        if isinstance(value, list):
            out[key] = ",".join(str(v) for v in value)
        elif isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"config file {path}: {key} must be a string or a number")
        else:
            out[key] = str(value)
    return out


def load_settings(
    env: Mapping[str, str],
    flags: Mapping[str, str | None] | None = None,
    config_file: str | None = None,
) -> Settings:
    """Resolve every setting from its sources; raises :class:`ConfigError`."""
    raw: dict[str, tuple[str, str]] = {s.name: (s.default, "default") for s in SETTINGS}
    path = config_file or env.get("QUDAG_CONFIG")
    if path:
        for key, value in _from_file(Path(path)).items():
            raw[key] = (value, f"config file {path}")
    for s in SETTINGS:
        if s.env in env:
            raw[s.name] = (env[s.env], "environment")
    for key, flag in (flags or {}).items():
        if flag is not None:
            if key not in BY_NAME:
                raise ConfigError(f"unknown setting {key!r}")
            raw[key] = (flag, "command line")
    values: dict[str, Any] = {}
    for s in SETTINGS:
        text, source = raw[s.name]
        if not _is_utf8(text):
            raise ConfigError(f"invalid {s.env} (from {source}): not UTF-8 text")
        if s.secret and not text.strip():
            values[s.name] = None
            continue
        try:
            values[s.name] = s.parse(text)
        except ValueError as e:
            raise ConfigError(f"invalid {s.env} (from {source}): {e}") from None
    platform = tuple((k, env[k]) for k in PLATFORM_ENV if env.get(k))
    settings = Settings(**values, platform=platform)
    if settings.max_submit_txs > settings.max_pending:
        raise ConfigError(
            f"invalid QUDAG_MAX_SUBMIT_TXS: {settings.max_submit_txs} is over QUDAG_MAX_PENDING"
            f" ({settings.max_pending}), so such a batch could never be accepted"
        )
    if settings.max_tx_bytes > settings.max_body_bytes:
        raise ConfigError("invalid QUDAG_MAX_TX_BYTES: must not exceed QUDAG_MAX_BODY_BYTES")
    if settings.peers and settings.peer_auth_token is None:
        raise ConfigError(
            "QUDAG_PEERS is set but PEER_AUTH_TOKEN is not: peers prove knowledge of a shared"
            " token; set the same PEER_AUTH_TOKEN (32+ hex characters) on every node"
        )
    token, previous = settings.peer_auth_token, settings.peer_auth_token_previous
    if previous is not None and (token is None or previous == token):
        raise ConfigError(
            "PEER_AUTH_TOKEN_PREVIOUS is set but PEER_AUTH_TOKEN is not, or is the same: during a"
            " rotation PEER_AUTH_TOKEN holds the new token and PEER_AUTH_TOKEN_PREVIOUS the old one"
        )
    if settings.kept_transactions.shorter_than(settings.retention):
        raise ConfigError(
            f"invalid QUDAG_TX_RETENTION: {settings.kept_transactions} is shorter than"
            f" QUDAG_RETENTION ({settings.retention}): a vertex the node keeps needs its"
            " transactions' bytes to be served, so they are kept at least as long as the DAG"
        )
    if settings.genesis_file and settings.validators:
        raise ConfigError("QUDAG_GENESIS and QUDAG_VALIDATORS are both set; use one of them")
    return settings


def _is_utf8(text: str) -> bool:
    """Whether ``text`` came from valid UTF-8: the environment and the command line
    carry undecodable bytes as lone surrogates, which no setting may hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def flag_name(setting: Setting) -> str:
    """The command-line flag of a setting, e.g. ``--api-port``."""
    return "--" + setting.name.replace("_", "-")
