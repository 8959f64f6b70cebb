"""The ``qudag-node`` command (also ``python -m qudag_node``).

Subcommands::

    run          run the node until SIGTERM or SIGINT (the default without a subcommand)
    keygen       print a new Ed25519 key pair as hex
    network-env  print the secrets and validator set of a new network as dotenv lines
    genesis      write a network's genesis file from its id and validators
    status       print a running node's status
    submit       submit one transaction to a running node
    backup       copy the database of a (possibly running) node to a new file
    restore      put a backup in place as a data directory's database
    testnet      run a local testnet of several validator nodes until Ctrl-C

Exit codes:

    0    success
    1    runtime failure: the node stopped on a fault, a node could not be reached or
         answered with an error, a backup or restore failed
    2    usage or configuration error: fix the command line, environment or config file
    130  interrupted (Ctrl-C) before a clean shutdown
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qudag_node import __version__, config, failure, root, store, testnet
from qudag_node.core.crypto import DEFAULT_SCHEME, SCHEME_LABELS, Scheme
from qudag_node.core.genesis import NAME_RULE, Genesis, Validator, is_valid_name
from qudag_node.genesis_file import (
    GenesisFileError,
    format_validator_list,
    genesis_to_json,
    parse_validator_list,
    validators_genesis,
)
from qudag_node.keyfile import new_signer
from qudag_node.logs import configure_logging

PROG = "qudag-node"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: The cyclic garbage collector's thresholds for a running node. Each request makes a
#: few hundred short-lived objects, nearly all freed by reference counting; CPython's
#: default (700, 10, 10) ran a young collection every few requests and a full one,
#: over every object of the node's state, every few hundred: about 4 % of the event
#: loop's time, in pauses of up to 20 ms. See docs/benchmarks.md.
GC_THRESHOLDS = (20_000, 20, 20)

#: Arguments that belong to the top level; any other leading option implies ``run``.
_TOP_LEVEL_FLAGS = ("-h", "--help", "--version")
#: Seconds an HTTP call may stay silent, on top of any finality wait it asks for.
HTTP_TIMEOUT = 30.0
#: The environment variable holding the API token that `submit` sends, if set.
API_TOKEN_ENV = config.BY_NAME["api_token"].env


class CommandError(Exception):
    """A subcommand cannot go on; the message is one line for stderr.

    ``exit_code`` says whose fault it is: :data:`EXIT_USAGE` for the caller's input,
    :data:`EXIT_FAILURE` for everything that went wrong at run time.
    """

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the subcommand, return the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not args_list or (args_list[0].startswith("-") and args_list[0] not in _TOP_LEVEL_FLAGS):
        args_list.insert(0, "run")
    try:
        args = parser.parse_args(args_list)
    except SystemExit as e:  # --help, --version, or a usage error already printed
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        return command(args)
    except CommandError as e:
        _say(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


# --- run ---------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    flags = {s.name: getattr(args, s.name) for s in config.SETTINGS if not s.secret}
    try:
        settings = config.load_settings(os.environ, flags, args.config)
    except config.ConfigError as e:
        raise CommandError(str(e), EXIT_USAGE) from None
    revealed = [
        value.reveal()
        for s in config.SETTINGS
        if s.secret and isinstance(value := getattr(settings, s.name), config.Secret)
    ]
    configure_logging(settings.log_level, settings.log_format, secrets=revealed)
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        asyncio.run(root.serve_until_signalled(settings))
    except failure.NodeFailure as e:
        raise CommandError(f"node stopped: {e}") from None
    except config.ConfigError as e:  # a setting only checked at start, such as the genesis
        raise CommandError(str(e), EXIT_USAGE) from None
    except Exception as e:  # whatever else stops the node still ends in one line
        detail = " ".join(str(e).split())
        raise CommandError(f"node stopped: unexpected {type(e).__name__}: {detail}") from None
    return EXIT_OK


# --- keygen ------------------------------------------------------------------------


def _keygen(args: argparse.Namespace) -> int:
    key = new_signer(Scheme.from_label(args.scheme))
    private_key = key.seed().hex()
    public_key = key.public_key.hex()
    if args.json:
        print(json.dumps({"private_key": private_key, "public_key": public_key}))
        return EXIT_OK
    print(f"private_key: {private_key}")
    print(f"public_key: {public_key}")
    _say("keep the private key secret: give it to the node only as NODE_PRIVATE_KEY")
    return EXIT_OK


# --- network-env -------------------------------------------------------------------


def _network_env(args: argparse.Namespace) -> int:
    count: int = args.nodes
    if not 1 <= count <= testnet.MAX_NODES:
        raise CommandError(f"--nodes must be from 1 to {testnet.MAX_NODES}", EXIT_USAGE)
    text = _network_env_text(count, Scheme.from_label(args.scheme))
    if args.output is None:
        print(text, end="")
        _say("keep these lines secret: they hold every node's private key")
        return EXIT_OK
    _write_new_file(
        Path(args.output), text, overwrite=False, mode=0o600, exists_hint="not overwriting it"
    )
    _say(f"wrote the secrets and validator set of node1..node{count} to {args.output}")
    return EXIT_OK


def _network_env_text(count: int, scheme: Scheme) -> str:
    """Dotenv lines for a new network of validators ``node1..node<count>``: each node's
    private key as ``NODE<i>_PRIVATE_KEY``, a shared ``PEER_AUTH_TOKEN`` and the ordered
    validator set as ``QUDAG_VALIDATORS``, after a comment line."""
    keys = [new_signer(scheme) for _ in range(count)]
    validators = [Validator(f"node{i}", key.public_key) for i, key in enumerate(keys, 1)]
    lines = [
        f"# A new qudag network of {count} validators (node1..node{count}), made by "
        f"{PROG} network-env ({scheme.label} keys). Secret: keep it private.",
        *(f"NODE{i}_PRIVATE_KEY={key.seed().hex()}" for i, key in enumerate(keys, 1)),
        f"PEER_AUTH_TOKEN={secrets.token_hex(32)}",
        f"QUDAG_VALIDATORS={format_validator_list(validators)}",
    ]
    return "\n".join(lines) + "\n"


# --- genesis -----------------------------------------------------------------------


def _genesis(args: argparse.Namespace) -> int:
    if args.force and args.out is None:
        raise CommandError("--force needs --out PATH", EXIT_USAGE)
    genesis = _genesis_from_args(args)
    text = genesis_to_json(genesis)
    if args.out is None:
        print(text, end="")
    else:
        _write_new_file(Path(args.out), text, overwrite=args.force)
    count = f"{genesis.n} validator{'' if genesis.n == 1 else 's'}"
    where = "" if args.out is None else f", written to {args.out}"
    _say(f"genesis hash {genesis.hash.hex()} (network {genesis.network_id}, {count}{where})")
    return EXIT_OK


def _genesis_from_args(args: argparse.Namespace) -> Genesis:
    network_id: str | None = args.network_id
    if network_id is None:
        raise CommandError("give the network id with --network-id ID", EXIT_USAGE)
    if not is_valid_name(network_id):
        raise CommandError(f"--network-id must be {NAME_RULE}", EXIT_USAGE)
    entries: list[str] = args.validators
    try:
        validators = parse_validator_list(",".join(entries))
    except GenesisFileError as e:
        raise CommandError(f"invalid validators: {e}", EXIT_USAGE) from None
    if not validators:
        raise CommandError("give at least one --validator NAME=PUBLIC_KEY", EXIT_USAGE)
    try:
        return validators_genesis(network_id, validators)
    except ValueError as e:
        raise CommandError(f"invalid genesis: {e}", EXIT_USAGE) from None


def _write_new_file(
    path: Path,
    text: str,
    overwrite: bool,
    mode: int = 0o666,
    exists_hint: str = "use --force to overwrite it",
) -> None:
    """Write ``text`` to ``path``; an existing file only with ``overwrite``. A new file
    gets ``mode`` (less the umask)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        with os.fdopen(os.open(path, flags, mode), "w", encoding="utf-8") as fh:
            fh.write(text)
    except FileExistsError:
        raise CommandError(f"{path} exists; {exists_hint}", EXIT_USAGE) from None
    except OSError as e:
        raise CommandError(f"cannot write {path}: {e.strerror}") from None


# --- status and submit -------------------------------------------------------------


def _default_url() -> str:
    raw = os.environ.get("QUDAG_API_PORT", config.BY_NAME["api_port"].default)
    try:
        port = config.BY_NAME["api_port"].parse(raw)
    except ValueError as e:
        raise CommandError(f"invalid QUDAG_API_PORT (from environment): {e}", EXIT_USAGE) from None
    return f"http://127.0.0.1:{port}"


def _base_url(args: argparse.Namespace) -> str:
    url: str = args.url or _default_url()
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise CommandError(f"--url {url!r} must start with http:// or https://", EXIT_USAGE)
    return url.rstrip("/")


def _call(url: str, timeout: float, data: bytes | None = None, token: str = "") -> Any:
    """GET ``url`` (or POST ``data`` as octet-stream, with ``token`` as its bearer token
    if given); the decoded JSON answer."""
    headers = {} if data is None else {"Content-Type": "application/octet-stream"}
    if data is not None and token:
        headers["Authorization"] = f"Bearer {token}"
    # _base_url admits only http and https URLs.
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body = response.read()
    except urllib.error.HTTPError as e:
        raise CommandError(_http_error(e)) from None
    except urllib.error.URLError as e:
        raise CommandError(f"cannot reach the node at {url}: {e.reason}") from None
    except OSError as e:  # a timeout or a reset after connecting
        raise CommandError(f"no answer from the node at {url}: {e}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise CommandError(f"the node at {url} did not answer with JSON") from None


def _http_error(error: urllib.error.HTTPError) -> str:
    try:
        detail = json.loads(error.read())["error"]
        return f"{detail['code']}: {detail['message']}"
    except (ValueError, KeyError, TypeError, OSError):
        return f"HTTP {error.code} {error.reason} from {error.url}"


def _print_json(document: Any) -> None:
    print(json.dumps(document, indent=2))


def _status(args: argparse.Namespace) -> int:
    url = f"{_base_url(args)}/api/v1/status"
    _print_json(_call(url, HTTP_TIMEOUT))
    return EXIT_OK


def _submit(args: argparse.Namespace) -> int:
    data = _transaction_bytes(args)
    url = f"{_base_url(args)}/api/v1/transactions"
    timeout = HTTP_TIMEOUT
    if args.wait:
        # The node takes plain decimals only ("1e-05" or "1e+20" are refused); it caps
        # the wait at its QUDAG_WAIT_TIMEOUT anyway.
        seconds = f"{min(max(args.timeout, 0.001), 1e6):.3f}"
        url += "?" + urllib.parse.urlencode({"wait": "final", "timeout": seconds})
        timeout += args.timeout
    # The node's API token, when it has one: from the environment only, like the node.
    token = os.environ.get(API_TOKEN_ENV, "").strip()
    _print_json(_call(url, timeout, data, token))
    return EXIT_OK


def _transaction_bytes(args: argparse.Namespace) -> bytes:
    if args.file is not None:
        if args.data is not None:
            raise CommandError("give the transaction as DATA or --file, not both", EXIT_USAGE)
        try:
            return Path(args.file).read_bytes()
        except OSError as e:
            raise CommandError(f"cannot read {args.file}: {e.strerror}", EXIT_USAGE) from None
    if args.data == "-" or (args.data is None and not sys.stdin.isatty()):
        return sys.stdin.buffer.read()
    if args.data is None:
        raise CommandError("give the transaction as DATA, --file PATH or on stdin", EXIT_USAGE)
    data: str = args.data
    return data.encode("utf-8", "surrogateescape")


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a positive number of seconds")
    return value


# --- backup and restore ------------------------------------------------------------


def _data_dir(args: argparse.Namespace) -> Path:
    default = os.environ.get("QUDAG_DATA_DIR") or config.BY_NAME["data_dir"].default
    return Path(args.data_dir or default)


def _backup(args: argparse.Namespace) -> int:
    dest = Path(args.path)
    source = _data_dir(args) / store.DB_FILENAME
    progress = _show_progress if sys.stderr.isatty() else None
    started = time.monotonic()
    try:
        pages = store.backup_database(source, dest, progress)
    except store.StoreError as e:
        raise CommandError(f"backup failed: {e}") from None
    finally:
        if progress is not None:
            print(file=sys.stderr)
    elapsed = time.monotonic() - started
    size = dest.stat().st_size
    print(f"backup: {pages} pages, {size} bytes in {elapsed:.2f} s from {source} to {dest}")
    return EXIT_OK


def _show_progress(done: int, total: int) -> None:
    percent = 100 * done // total if total else 100
    print(f"\rbackup: {percent:3d}% ({done}/{total} pages)", end="", file=sys.stderr, flush=True)


def _restore(args: argparse.Namespace) -> int:
    backup = Path(args.path)
    data_dir = _data_dir(args)
    try:
        store.restore_database(backup, data_dir)
    except store.StoreError as e:
        raise CommandError(f"restore failed: {e}") from None
    print(f"restore: {backup} is now {data_dir / store.DB_FILENAME}; start the node to use it")
    return EXIT_OK


# --- testnet -----------------------------------------------------------------------


def _testnet(args: argparse.Namespace) -> int:
    options = testnet.Options(
        nodes=args.nodes,
        directory=Path(args.dir),
        api_port=args.api_port,
        p2p_port=args.p2p_port,
        sync_interval=args.sync_interval,
        checkpoint_interval=args.checkpoint_interval,
        scheme=Scheme.from_label(args.scheme),
        peer_transport=args.peer_transport,
    )
    try:
        return testnet.run(options)
    except testnet.LaunchError as e:
        raise CommandError(str(e), e.exit_code) from None


# --- the parser --------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="QuDAG testnet node. Without a subcommand: run.",
        epilog="Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(title="subcommands", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the node (the default)",
        description="Run the node until SIGTERM or SIGINT. Settings: defaults < config file "
        "< environment < these flags. Secrets (NODE_PRIVATE_KEY, PEER_AUTH_TOKEN) come only "
        "from the environment.",
    )
    run.add_argument(
        "--config",
        metavar="PATH",
        help="TOML file of settings (also QUDAG_CONFIG)",
    )
    for s in config.SETTINGS:
        if not s.secret:
            run.add_argument(
                config.flag_name(s),
                dest=s.name,
                metavar="VALUE",
                help=f"{s.help} Env {s.env}, default {s.default!r}.".replace("%", "%%"),
            )
    run.set_defaults(command=_run)

    _add_network_commands(sub)

    url_help = "the node's API (default http://127.0.0.1:<QUDAG_API_PORT or 8080>)"
    status = sub.add_parser(
        "status",
        help="print a running node's status",
        description="GET /api/v1/status and print it.",
    )
    status.add_argument("--url", help=url_help)
    status.set_defaults(command=_status)

    submit = sub.add_parser(
        "submit",
        help="submit one transaction",
        description="POST one transaction to /api/v1/transactions and print the answer. "
        "The transaction is DATA (UTF-8), the file given by --file, or stdin when DATA is "
        f"'-' or absent. A node that has an API token needs it in {API_TOKEN_ENV}.",
    )
    submit.add_argument("data", nargs="?", metavar="DATA", help="the transaction text")
    submit.add_argument("--file", metavar="PATH", help="read the transaction from a file")
    submit.add_argument("--url", help=url_help)
    submit.add_argument(
        "--wait", action="store_true", help="answer only once the transaction is final"
    )
    submit.add_argument(
        "--timeout",
        type=_seconds,
        default=float(config.BY_NAME["wait_timeout"].default),
        metavar="SECONDS",
        help="with --wait: how long the node waits for finality (default %(default)s; "
        "the node caps it at its QUDAG_WAIT_TIMEOUT)",
    )
    submit.set_defaults(command=_submit)

    dir_help = "the node's data directory (default QUDAG_DATA_DIR or ./data)"
    backup = sub.add_parser(
        "backup",
        help="copy the database to a new file, also while the node runs",
        description="Online backup of DATA_DIR/qudag.db to PATH. PATH must not exist.",
    )
    backup.add_argument("path", metavar="PATH", help="the backup file to create")
    backup.add_argument("--data-dir", metavar="DIR", help=dir_help)
    backup.set_defaults(command=_backup)

    restore = sub.add_parser(
        "restore",
        help="restore a backup into a data directory",
        description="Check the backup PATH and install it as DATA_DIR/qudag.db. The data "
        "directory must not hold a database yet; stop the node first.",
    )
    restore.add_argument("path", metavar="PATH", help="the backup file")
    restore.add_argument("--data-dir", metavar="DIR", help=dir_help)
    restore.set_defaults(command=_restore)

    defaults = testnet.Options()
    net = sub.add_parser(
        "testnet",
        help="run a local testnet of several validator nodes",
        description="Run N validator nodes of the network qudag-local-testnet on 127.0.0.1, "
        "one process each, until Ctrl-C or SIGTERM. DIR keeps a key and a log per node "
        "(DIR/nodeI/), the shared peer token and genesis.json; a later run reuses them. "
        "Node I serves its API on API_PORT+I-1 and its peer links on P2P_PORT+I-1.",
    )
    net.add_argument(
        "--nodes",
        type=int,
        default=defaults.nodes,
        metavar="N",
        help=f"how many nodes, 1 to {testnet.MAX_NODES} (default %(default)s)",
    )
    net.add_argument(
        "--dir",
        default=str(defaults.directory),
        metavar="DIR",
        help="the testnet's directory (default ./%(default)s)",
    )
    net.add_argument(
        "--api-port",
        type=int,
        default=defaults.api_port,
        metavar="PORT",
        help="API port of node1 (default %(default)s)",
    )
    net.add_argument(
        "--p2p-port",
        type=int,
        default=defaults.p2p_port,
        metavar="PORT",
        help="peer port of node1 (default %(default)s)",
    )
    net.add_argument(
        "--sync-interval",
        type=_seconds,
        default=defaults.sync_interval,
        metavar="SECONDS",
        help="the nodes' DAG_SYNC_INTERVAL (default %(default)g)",
    )
    net.add_argument(
        "--checkpoint-interval",
        type=int,
        default=defaults.checkpoint_interval,
        metavar="ROUNDS",
        help="the nodes' QUDAG_CHECKPOINT_INTERVAL (default %(default)s)",
    )
    net.add_argument(
        "--peer-transport",
        choices=config.PEER_TRANSPORTS,
        default=defaults.peer_transport,
        help="the nodes' QUDAG_PEER_TRANSPORT: peer links in TLS 1.3 or in clear"
        " (default %(default)s)",
    )
    _scheme_option(net, "the signature scheme of new node keys (existing keys keep theirs)")
    net.set_defaults(command=_testnet)
    return parser


def _add_network_commands(sub: Any) -> None:
    """keygen, network-env and genesis: the commands that make a new network."""
    keygen = sub.add_parser(
        "keygen",
        help="print a new key pair",
        description="Print a new private and public key in lowercase hex (the form "
        "NODE_PRIVATE_KEY takes). A mldsa65-ed25519 private key is 128 hex characters (the "
        "ML-DSA-65 seed, then the Ed25519 seed), its public key 3,968; an ed25519 one 64 and 64.",
    )
    keygen.add_argument("--json", action="store_true", help="print one JSON object")
    _scheme_option(keygen, "the key's signature scheme")
    keygen.set_defaults(command=_keygen)

    network_env = sub.add_parser(
        "network-env",
        help="print the secrets of a new network as dotenv lines",
        description="Make a new network of validators node1..nodeN: print a new private key "
        "for each (NODE<I>_PRIVATE_KEY), a new shared PEER_AUTH_TOKEN and the validator set "
        "(QUDAG_VALIDATORS) as dotenv lines, the .env file that docker-compose.yml reads. "
        "With --output the lines go to a new file of mode 0600 instead, and nothing secret "
        "is printed.",
    )
    network_env.add_argument(
        "--nodes",
        type=int,
        required=True,
        metavar="N",
        help=f"how many validators, 1 to {testnet.MAX_NODES}",
    )
    network_env.add_argument(
        "--output", metavar="FILE", help="write a new file (never overwritten) instead of stdout"
    )
    _scheme_option(network_env, "the network's signature scheme")
    network_env.set_defaults(command=_network_env)

    genesis = sub.add_parser(
        "genesis",
        help="write a network's genesis file",
        description="Write the genesis file (JSON) of a network: its id and its ordered "
        "validator set, public keys in hex as keygen prints them (their size names the "
        "network's signature scheme: all of one size). Give validators with "
        "--validator (repeatable) and --validators, in order. The file goes to stdout, or "
        "to --out; its hash goes to stderr. Use the file with QUDAG_GENESIS.",
    )
    genesis.add_argument("--network-id", metavar="ID", help="the network id (required)")
    genesis.add_argument(
        "--validator",
        dest="validators",
        action="append",
        default=[],
        metavar="NAME=PUBLIC_KEY",
        help="one validator (repeat for more)",
    )
    genesis.add_argument(
        "--validators",
        dest="validators",
        action="append",
        metavar="LIST",
        help="several validators as NAME=PUBLIC_KEY,NAME=PUBLIC_KEY",
    )
    genesis.add_argument("--out", metavar="PATH", help="write the file here instead of stdout")
    genesis.add_argument(
        "--force", action="store_true", help="with --out: overwrite an existing file"
    )
    genesis.set_defaults(command=_genesis)


def _scheme_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--scheme",
        choices=SCHEME_LABELS,
        default=DEFAULT_SCHEME.label,
        help=f"{what} (default %(default)s)",
    )
