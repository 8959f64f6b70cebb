#!/usr/bin/env python3
"""Helpers of scripts/deploy.sh: read flyctl's JSON, check the genesis file, make labels.

Each subcommand reads what it needs from its arguments and stdin and prints plain lines
for the shell. Only the standard library is used (Python 3.11 or newer). A problem the
operator must fix is printed on stderr with exit code 1.

flyctl has printed its JSON with two casings over time (``Code``/``code``, ``Name``/``name``):
both are read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import secrets
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: A validator's public key in a genesis file: 32 bytes (ed25519) or 1,984 (mldsa65-ed25519).
HEX_KEY = re.compile(r"[0-9a-f]{64}|[0-9a-f]{3968}")
#: Machine states and check statuses that mean "up and well".
STARTED = "started"
PASSING = "passing"
EARTH_RADIUS_KM = 6371.0


class Problem(Exception):
    """Something the operator has to fix; the message says what and how."""


def field(obj: dict[str, Any], name: str) -> Any:
    """``obj[name]`` under flyctl's current (lower case) or older (Capitalized) name."""
    if name in obj:
        return obj[name]
    return obj.get(name[:1].upper() + name[1:])


def read_json() -> Any:
    """The JSON document on stdin."""
    try:
        return json.load(sys.stdin)
    except ValueError:
        raise Problem("flyctl did not answer with JSON (is it too old for --json?)") from None


# --- regions -----------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    """A region Fly offers."""

    code: str
    name: str
    latitude: float
    longitude: float


def offered_regions(document: Any) -> dict[str, Region]:
    """The regions in ``fly platform regions --json`` that are not deprecated, by code."""
    out = {}
    for item in document:
        if field(item, "deprecated"):
            continue
        code = str(field(item, "code"))
        out[code] = Region(
            code,
            str(field(item, "name")),
            float(field(item, "latitude") or 0.0),
            float(field(item, "longitude") or 0.0),
        )
    return out


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance between two points given in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(a))


def alternatives(offered: dict[str, Region], wanted: Sequence[str]) -> list[Region]:
    """Offered regions not in ``wanted``, nearest to the wanted ones Fly offers first."""
    free = [r for code, r in offered.items() if code not in wanted]
    kept = [offered[c] for c in wanted if c in offered]
    if not kept:
        return sorted(free, key=lambda r: r.name)
    lat = sum(r.latitude for r in kept) / len(kept)
    lon = sum(r.longitude for r in kept) / len(kept)
    return sorted(free, key=lambda r: distance_km(lat, lon, r.latitude, r.longitude))


def check_regions(args: argparse.Namespace) -> None:
    """Fail, naming what is missing and what could replace it, unless Fly offers all."""
    wanted = args.regions.split(",")
    offered = offered_regions(read_json())
    missing = [c for c in wanted if c not in offered]
    if not missing:
        print(f"Fly offers all of {','.join(wanted)}")
        return
    choices = alternatives(offered, wanted)
    kept = [c for c in wanted if c in offered]
    suggestion = list(wanted)
    for code, replacement in zip(missing, choices, strict=False):
        suggestion[wanted.index(code)] = replacement.code
    near = f", nearest to {', '.join(kept)} first" if kept else ""
    lines = [
        f"Fly does not offer region{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
        f"(a typo, or a region Fly withdrew: yul and 16 others went on 2025-10-16).",
        f"Regions Fly offers that this deployment does not use yet{near}:",
        *(f"  {r.code}  {r.name}" for r in choices),
        f"Choose with --regions, for example: --regions {','.join(suggestion)}",
    ]
    raise Problem("\n".join(lines))


# --- apps, volumes, secrets, machines ----------------------------------------------


def names(args: argparse.Namespace) -> None:
    """The ``name`` of every item of a JSON list (apps), one a line."""
    for item in read_json():
        print(field(item, "name"))


def volume_state(args: argparse.Namespace) -> None:
    """``present`` when the app has the volume in its region, ``absent`` when it has none;
    a volume of that name only in another region is a problem, not a reason for a second."""
    volumes = [v for v in read_json() if field(v, "name") == args.volume]
    if any(field(v, "region") == args.region for v in volumes):
        print("present")
        return
    if not volumes:
        print("absent")
        return
    where = ", ".join(f"{field(v, 'id')} in {field(v, 'region')}" for v in volumes)
    raise Problem(
        f"{args.app} has volume {args.volume} in another region ({where}), but its Machine "
        f"is to run in {args.region}, and a Machine mounts only a volume of its own region. "
        f"Deploy with --regions that keep {args.app} where its data is, or move the data: "
        f"fly volumes snapshots create <volume id>, then fly volumes create {args.volume} "
        f"--snapshot-id <snapshot id> --region {args.region} -a {args.app}, and destroy the old "
        f"volume."
    )


def secret_list(args: argparse.Namespace) -> None:
    """``NAME STATUS`` per secret; the status is ``-`` when flyctl does not report one."""
    for item in read_json():
        print(field(item, "name"), field(item, "status") or "-")


def machines_of(document: Any) -> list[dict[str, Any]]:
    """The Machines in ``fly status --json``."""
    machines: list[dict[str, Any]] = field(document, "machines") or []
    return machines


def running_tag(args: argparse.Namespace) -> None:
    """The image tag every Machine of the app runs, or an empty line (none, or several)."""
    tags = {str((field(m, "image_ref") or {}).get("tag", "")) for m in machines_of(read_json())}
    print(tags.pop() if len(tags) == 1 else "")


def health(args: argparse.Namespace) -> None:
    """Exit 0 when the app has Machines, all started with every check passing; else exit 3
    with the reason on stdout."""
    machines = machines_of(read_json())
    problems = [
        f"machine {field(m, 'id')} is {field(m, 'state')}"
        for m in machines
        if field(m, "state") != STARTED
    ]
    problems += [
        f"check {field(c, 'name')} of machine {field(m, 'id')} is {field(c, 'status')}"
        for m in machines
        for c in field(m, "checks") or []
        if field(c, "status") != PASSING
    ]
    if not machines:
        problems.append("it has no machine")
    if problems:
        print("; ".join(problems))
        sys.exit(3)
    checks = sum(len(field(m, "checks") or []) for m in machines)
    print(f"{len(machines)} machine(s) started, {checks} check(s) passing")


# --- configs, keys, genesis --------------------------------------------------------


def app_spec(args: argparse.Namespace) -> None:
    """What the script needs from a generated fly.toml, as ``key value`` lines."""
    config = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
    mount = config["mounts"]
    size = re.fullmatch(r"(\d+)\s*gb", str(mount["initial_size"]).lower())
    if size is None:
        raise Problem(f'{args.config}: initial_size must be whole gigabytes, like "1gb"')
    print("volume", mount["source"])
    print("volume_size_gb", size.group(1))
    print("snapshot_retention", mount["snapshot_retention"])
    print("network_id", "qudag-" + config["env"]["NETWORK_MODE"])


def genesis_check(args: argparse.Namespace) -> None:
    """``absent``, or the genesis file's validators as ``name=key,...`` after checking that
    it defines network ``network_id`` with exactly the validators ``nodes``, in order."""
    path = Path(args.path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        print("absent")
        return
    except ValueError as e:
        raise Problem(f"{path} is not a JSON genesis file: {e}") from None
    if document.get("network_id") != args.network_id:
        raise Problem(
            f"{path} is for network {document.get('network_id')!r}, but the apps run "
            f"network {args.network_id!r}; use another --genesis"
        )
    validators = document.get("validators") or []
    listed = [v.get("name") for v in validators]
    if listed != args.nodes:
        raise Problem(
            f"{path} lists validators {', '.join(map(str, listed)) or 'none'}, not "
            f"{', '.join(args.nodes)}: a node whose key secret is set must be in the genesis. "
            f"Use the genesis file written with these keys, or start a new network (see the "
            f"script's --help)."
        )
    for v in validators:
        if not HEX_KEY.fullmatch(str(v.get("public_key", ""))):
            raise Problem(
                f"{path}: the public key of {v['name']} is not 64 or 3968 lowercase hex"
                " characters (an ed25519 or a mldsa65-ed25519 key)"
            )
    print(",".join(f"{v['name']}={v['public_key']}" for v in validators))


def keypair(args: argparse.Namespace) -> None:
    """``PRIVATE PUBLIC`` from ``qudag-node keygen --json`` on stdin."""
    document = read_json()
    print(document["private_key"], document["public_key"])


def token(args: argparse.Namespace) -> None:
    """A new token (peer or API): 32 random bytes as hex."""
    print(secrets.token_hex(32))


def read_token(args: argparse.Namespace) -> None:
    """Print the API token kept in a file (one line), refusing a file others may read."""
    path = Path(args.path)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise Problem(f"cannot read the API token file {path}: {e}") from None
    if mode & 0o077:
        raise Problem(f"the API token file {path} may be read by others: chmod 600 {path}")
    if len(text) < 16 or any(c.isspace() for c in text):
        raise Problem(f"the API token file {path} does not hold one token of 16+ characters")
    print(text)


def write_token(args: argparse.Namespace) -> None:
    """Write the token read from stdin to a new file of mode 0600 (replacing an old one)."""
    path = Path(args.path)
    value = sys.stdin.read().strip()
    temporary = path.with_name(path.name + ".new")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.unlink(missing_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(value + "\n")
        temporary.replace(path)
    except OSError as e:
        raise Problem(f"cannot write the API token file {path}: {e.strerror}") from None


# --- labels ------------------------------------------------------------------------


#: What an app's image and fly.toml are made of: the files the Dockerfile copies, the
#: files that decide what it copies, and the config template. A change anywhere else
#: (docs, tests, the genesis file) redeploys nothing.
BUILD_INPUTS = (
    "Dockerfile",
    ".dockerignore",
    "requirements.lock",
    "pyproject.toml",
    "README.md",
    "qudag_node/",
    "docker/",
    "fly/template.toml",
    "fly/generate.py",
)


def is_build_input(name: str) -> bool:
    """Whether the repository file ``name`` (relative, with /) goes into the label."""
    return any(
        name == item or (item.endswith("/") and name.startswith(item)) for item in BUILD_INPUTS
    )


def build_inputs_digest(repo: Path) -> bytes:
    """SHA-256 over the path and content of every build input git tracks in ``repo`` (as
    they are in the working tree, so uncommitted edits count)."""
    try:
        listing = subprocess.run(
            ["git", "-C", str(repo), "ls-files", "-z"], capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        raise Problem(
            f"cannot list the files of {repo} with git ls-files: the build label needs a git "
            f"checkout"
        ) from None
    digest = hashlib.sha256()
    for name in sorted(listing.split(b"\0")):
        path = repo / name.decode()
        if name and is_build_input(name.decode()) and path.is_file():
            digest.update(name + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.digest()


def labels(args: argparse.Namespace) -> None:
    """``APP LABEL`` per ``APP:REGION``. A label is ``v<validators>-b<build>``: the first
    part changes exactly when the validator set does, the second when anything the image
    or the app's fly.toml is made of does (:data:`BUILD_INPUTS`, app name, region)."""
    validators = hashlib.sha256(args.validators.encode()).hexdigest()[:8]
    inputs = build_inputs_digest(Path(args.repo))
    for item in args.apps:
        app, _, region = item.partition(":")
        build = hashlib.sha256(inputs + f"\0{app}\0{region}".encode()).hexdigest()[:12]
        print(app, f"v{validators}-b{build}")


# --- the check transaction ---------------------------------------------------------


def tx_id(args: argparse.Namespace) -> None:
    """The id of the one transaction in ``qudag-node submit``'s answer."""
    document = read_json()
    if document.get("status") != "final" or len(document.get("ids", [])) != 1:
        raise Problem(f"the node did not report one final transaction: {document}")
    print(document["ids"][0])


def wait_final(args: argparse.Namespace) -> None:
    """Poll ``URL/api/v1/transactions/ID`` until it is final; print its log position."""
    url = f"{args.url.rstrip('/')}/api/v1/transactions/{args.id}"
    deadline = time.monotonic() + args.timeout
    last = "no answer yet"
    while True:
        try:
            # The URL is the operator's node, http or https.
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
                document = json.loads(response.read())
            if document.get("status") == "final":
                print(f"final at log position {document.get('seq')}")
                return
            last = f"status {document.get('status')}"
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except (OSError, ValueError) as e:
            last = str(e)
        if time.monotonic() > deadline:
            raise Problem(f"{url}: not final after {args.timeout:g} s ({last})")
        time.sleep(1)


# --- command line ------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deploy_support.py", description=__doc__)
    sub = parser.add_subparsers(required=True)

    def command(name: str, handler: Callable[[argparse.Namespace], None]) -> Any:
        p = sub.add_parser(name, help=(handler.__doc__ or "").split("\n")[0])
        p.set_defaults(handler=handler)
        return p

    command("check-regions", check_regions).add_argument("regions")
    command("names", names)
    vol = command("volume-state", volume_state)
    for name in ("app", "volume", "region"):
        vol.add_argument(name)
    command("secrets", secret_list)
    command("running-tag", running_tag)
    command("health", health)
    command("app-spec", app_spec).add_argument("config")
    gen = command("genesis-check", genesis_check)
    gen.add_argument("path")
    gen.add_argument("network_id")
    gen.add_argument("nodes", nargs="+")
    command("keypair", keypair)
    command("token", token)
    command("read-token", read_token).add_argument("path")
    command("write-token", write_token).add_argument("path")
    lab = command("labels", labels)
    lab.add_argument("repo")
    lab.add_argument("validators")
    lab.add_argument("apps", nargs="+", metavar="APP:REGION")
    command("tx-id", tx_id)
    wait = command("wait-final", wait_final)
    wait.add_argument("url")
    wait.add_argument("id")
    wait.add_argument("timeout", type=float)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; exit code 1 and a message on stderr for a problem to fix."""
    args = _parser().parse_args(argv)
    try:
        args.handler(args)
    except Problem as e:
        print(f"deploy.sh: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
