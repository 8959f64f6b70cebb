"""The commands of flyctl that scripts/deploy.sh uses, against a local JSON state.

``tests/fakefly/fly`` runs :func:`main`. The state lives in ``$FAKE_FLY_STATE/state.json``
(apps, volumes, secrets with their values, Machines); every call appends one JSON line to
``$FAKE_FLY_STATE/calls.log``: its argv and, for ``secrets import``, the secret names read
from stdin (never the values). Output, JSON shapes, exit codes and error lines follow real
flyctl: JSON field names as flyctl prints them today, errors as ``Error: ...`` on stderr
with exit code 1.

Failure injection, by environment variable:

``FAKE_FLY_LOGGED_OUT=1``
    every command fails as flyctl does without an access token;
``FAKE_FLY_REGIONS=yyz,ord,...``
    the region codes Fly offers (default: all of :data:`REGIONS`);
``FAKE_FLY_FAIL_DEPLOY=app,app``
    ``fly deploy`` of these apps fails and changes nothing.

A deploy starts no real process: its Machine reports ``started`` and a passing check at once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

STATE_FILE = "state.json"
CALLS_LOG = "calls.log"
EMAIL = "operator@example.com"
DEFAULT_ORG = "personal"
NOT_LOGGED_IN = "No access token available. Please login with 'flyctl auth login'"


@dataclass(frozen=True)
class Region:
    """One region as Fly's platform API describes it."""

    code: str
    name: str
    latitude: float
    longitude: float
    gateway: bool
    geo_region: str


#: The regions of Fly's region list of late 2025 (after 17 were withdrawn on 2025-10-16).
REGIONS = (
    Region("ams", "Amsterdam, Netherlands", 52.31, 4.77, True, "europe"),
    Region("arn", "Stockholm, Sweden", 59.65, 17.93, True, "europe"),
    Region("bom", "Mumbai, India", 19.09, 72.87, True, "asia_pacific"),
    Region("cdg", "Paris, France", 49.01, 2.55, True, "europe"),
    Region("dfw", "Dallas, Texas (US)", 32.90, -97.04, True, "north_america"),
    Region("ewr", "Secaucus, NJ (US)", 40.79, -74.06, True, "north_america"),
    Region("fra", "Frankfurt, Germany", 50.04, 8.56, True, "europe"),
    Region("gru", "Sao Paulo, Brazil", -23.43, -46.47, False, "south_america"),
    Region("iad", "Ashburn, Virginia (US)", 39.04, -77.49, True, "north_america"),
    Region("jnb", "Johannesburg, South Africa", -26.14, 28.25, False, "africa"),
    Region("lax", "Los Angeles, California (US)", 33.94, -118.41, True, "north_america"),
    Region("lhr", "London, United Kingdom", 51.47, -0.46, True, "europe"),
    Region("nrt", "Tokyo, Japan", 35.77, 140.39, True, "asia_pacific"),
    Region("ord", "Chicago, Illinois (US)", 41.98, -87.90, True, "north_america"),
    Region("sin", "Singapore, Singapore", 1.36, 103.99, True, "asia_pacific"),
    Region("sjc", "San Jose, California (US)", 37.36, -121.93, True, "north_america"),
    Region("syd", "Sydney, Australia", -33.95, 151.18, True, "asia_pacific"),
    Region("yyz", "Toronto, Canada", 43.68, -79.63, True, "north_america"),
)


class FlyError(Exception):
    """A command failed; the message is what flyctl prints after ``Error:``."""


# --- state -------------------------------------------------------------------------


def state_dir() -> Path:
    """The directory named by ``$FAKE_FLY_STATE``."""
    raw = os.environ.get("FAKE_FLY_STATE")
    if not raw:
        raise FlyError("FAKE_FLY_STATE is not set (the stand-in keeps its state there)")
    return Path(raw)


def load_state(directory: Path) -> dict[str, Any]:
    """The stand-in's state in ``directory`` (empty when nothing was created yet)."""
    try:
        state: dict[str, Any] = json.loads((directory / STATE_FILE).read_text())
    except FileNotFoundError:
        return {"apps": {}}
    return state


def save_state(directory: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``directory``, replacing the file in one step."""
    tmp = directory / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.replace(directory / STATE_FILE)


def read_calls(directory: Path) -> list[dict[str, Any]]:
    """Every call logged in ``directory``, oldest first."""
    try:
        lines = (directory / CALLS_LOG).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines]


def _log_call(directory: Path, argv: Sequence[str], stdin_names: list[str] | None) -> None:
    entry: dict[str, Any] = {"argv": list(argv)}
    if stdin_names is not None:
        entry["stdin_names"] = stdin_names
    with (directory / CALLS_LOG).open("a") as fh:
        fh.write(json.dumps(entry) + "\n")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _app(state: dict[str, Any], name: str | None) -> dict[str, Any]:
    if not name:
        raise FlyError("the config for your app is missing an app name, add an app field")
    app: dict[str, Any] | None = state["apps"].get(name)
    if app is None:
        raise FlyError(f'failed to get app: Could not find App "{name}"')
    return app


def offered_regions() -> list[Region]:
    """The regions Fly offers now: ``$FAKE_FLY_REGIONS`` or all of :data:`REGIONS`."""
    raw = os.environ.get("FAKE_FLY_REGIONS")
    if not raw:
        return list(REGIONS)
    known = {r.code: r for r in REGIONS}
    unknown = [c for c in raw.split(",") if c not in known]
    if unknown:
        raise FlyError(f"FAKE_FLY_REGIONS names regions the stand-in does not know: {unknown}")
    return [known[c] for c in raw.split(",")]


# --- commands ----------------------------------------------------------------------


def _out(document: Any) -> None:
    print(json.dumps(document, indent=2))


def _whoami(state: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        _out({"email": EMAIL})
    else:
        print(EMAIL)


def _regions(state: dict[str, Any], args: argparse.Namespace) -> None:
    regions = sorted(offered_regions(), key=lambda r: r.name)
    if not args.json:
        for r in regions:
            print(f"{r.name:<32} {r.code}")
        return
    _out(
        [
            {
                "code": r.code,
                "name": r.name,
                "latitude": r.latitude,
                "longitude": r.longitude,
                "gateway_available": r.gateway,
                "requires_paid_plan": False,
                "deprecated": False,
                "capacity": 1000,
                "geo_region": r.geo_region,
            }
            for r in regions
        ]
    )


def _app_document(name: str, app: dict[str, Any]) -> dict[str, Any]:
    return {
        "ID": name,
        "Name": name,
        "Status": "deployed" if app["machines"] else "pending",
        "Deployed": bool(app["machines"]),
        "Hostname": f"{name}.fly.dev",
        "AppURL": f"https://{name}.fly.dev",
        "Version": app["release"],
        "Organization": {"ID": app["org"], "Slug": app["org"], "Name": app["org"]},
        "PlatformVersion": "machines",
    }


def _apps_list(state: dict[str, Any], args: argparse.Namespace) -> None:
    apps = [_app_document(name, app) for name, app in sorted(state["apps"].items())]
    if args.json:
        _out(apps)
        return
    for doc in apps:
        print(f"{doc['Name']:<24} {doc['Organization']['Slug']:<16} {doc['Status']}")


def _apps_create(state: dict[str, Any], args: argparse.Namespace) -> None:
    name = args.name or args.app_name
    if not name:
        raise FlyError("app name required")
    if name in state["apps"]:
        raise FlyError("Validation failed: Name has already been taken")
    state["apps"][name] = {
        "org": args.org or DEFAULT_ORG,
        "volumes": [],
        "secrets": {},
        "machines": [],
        "release": 0,
    }
    print(f"New app created: {name}")


def _volumes_list(state: dict[str, Any], args: argparse.Namespace) -> None:
    volumes = _app(state, args.app)["volumes"]
    if args.json:
        _out(volumes)
        return
    for v in volumes:
        print(f"{v['id']}  {v['state']}  {v['name']}  {v['size_gb']}GB  {v['region']}")


def _new_volume(name: str, region: str, size_gb: int, retention: int) -> dict[str, Any]:
    if region not in {r.code for r in offered_regions()}:
        raise FlyError(f"failed creating volume: region {region!r} is not a valid region")
    return {
        "id": "vol_" + secrets.token_hex(8),
        "name": name,
        "state": "created",
        "size_gb": size_gb,
        "region": region,
        "zone": secrets.token_hex(2),
        "encrypted": True,
        "attached_machine_id": None,
        "attached_alloc_id": None,
        "created_at": _now(),
        "host_dedication_id": "",
        "snapshot_retention": retention,
        "auto_backup_enabled": True,
    }


def _volumes_create(state: dict[str, Any], args: argparse.Namespace) -> None:
    app = _app(state, args.app)
    if not args.region:
        raise FlyError("--region is required when not running interactively")
    if not args.yes:
        raise FlyError("the creation of a volume needs confirmation: pass --yes")
    volume = _new_volume(args.volume_name, args.region, args.size, args.snapshot_retention)
    app["volumes"].append(volume)
    print(f"                  ID: {volume['id']}")
    print(f"                Name: {volume['name']}")
    print(f"                 App: {args.app}")
    print(f"              Region: {volume['region']}")
    print(f"             Size GB: {volume['size_gb']}")
    print(f"  Snapshot retention: {volume['snapshot_retention']}")


def _secrets_list(state: dict[str, Any], args: argparse.Namespace) -> None:
    app = _app(state, args.app)
    listed = [
        {"name": name, "digest": s["digest"], "status": s["status"]}
        for name, s in sorted(app["secrets"].items())
    ]
    if args.json:
        _out(listed)
        return
    for s in listed:
        print(f"{s['name']:<24} {s['digest']}  {s['status']}")


def parse_secret_lines(text: str) -> dict[str, str]:
    """``NAME=VALUE`` lines as flyctl's ``secrets import`` reads them (blank lines skipped)."""
    pairs = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise FlyError(f"Failed to parse secrets from stdin: invalid line {name.strip()!r}")
        pairs[name.strip()] = value
    return pairs


def _secrets_import(state: dict[str, Any], args: argparse.Namespace) -> None:
    app = _app(state, args.app)
    pairs: dict[str, str] = args.stdin_pairs
    if not pairs:
        raise FlyError("requires at least one SECRET=VALUE pair")
    status = "Staged" if args.stage or not app["machines"] else "Deployed"
    for name, value in pairs.items():
        app["secrets"][name] = {
            "value": value,
            "digest": hashlib.sha256(value.encode()).hexdigest()[:16],
            "status": status,
            "updated_at": _now(),
        }
    if args.stage:
        print("Secrets have been staged, but not set on VMs. Deploy or update machines in")
        print(f"this app with the `fly secrets deploy` command to apply the changes ({args.app}).")


def _resolve_dockerfile(config_path: Path, build: dict[str, Any], workdir: Path) -> Path:
    """Where flyctl takes the Dockerfile from: ``[build] dockerfile`` joined to the config
    file's directory (as Go's filepath.Join does), else the build context's Dockerfile."""
    relative = build.get("dockerfile")
    if relative is None:
        return workdir.absolute() / "Dockerfile"
    joined = os.path.normpath(os.path.join(config_path.parent, str(relative).lstrip("/")))
    return Path(os.path.abspath(joined))


def _deploy(state: dict[str, Any], args: argparse.Namespace) -> None:
    config_path = Path(args.config or "fly.toml")
    try:
        config = tomllib.loads(config_path.read_text())
    except FileNotFoundError:
        raise FlyError(f"app config file '{config_path}' not found") from None
    name = str(args.app or config.get("app") or "")
    app = _app(state, name)
    if config.get("app") != name:
        raise FlyError(f"the config {config_path} is for app {config.get('app')!r}, not {name!r}")
    workdir = Path(args.workdir)
    dockerfile = _resolve_dockerfile(config_path, config.get("build", {}), workdir)
    if dockerfile != workdir.absolute() / "Dockerfile":
        raise FlyError(f"dockerfile '{dockerfile}' not found")
    label = args.image_label or "deployment-" + datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    print("==> Verifying app config")
    print(f"--> Verified app config\n==> Building image\nimage: registry.fly.io/{name}:{label}")
    if name in os.environ.get("FAKE_FLY_FAIL_DEPLOY", "").split(","):
        raise FlyError("smoke checks for 3d8d9930b1e389 failed: the app appears to be crashing")
    region = config["primary_region"]
    mount = config.get("mounts", {})
    wanted = 2 if args.ha == "true" and not app["machines"] else max(1, len(app["machines"]))
    if mount:
        free = [v for v in app["volumes"] if v["name"] == mount["source"] and v["region"] == region]
        for _ in range(wanted - len(free)):
            volume = _new_volume(
                mount["source"], region, 1, int(mount.get("snapshot_retention", 5))
            )
            print(f"Creating 1GB volume '{mount['source']}' in {region}")
            app["volumes"].append(volume)
    app["release"] += 1
    while len(app["machines"]) < wanted:
        app["machines"].append({"id": secrets.token_hex(7), "created_at": _now()})
    for machine in app["machines"]:
        machine.update(_machine(name, app, config, label))
    for secret in app["secrets"].values():
        secret["status"] = "Deployed"
    print(f"\nVisit your newly deployed app at https://{name}.fly.dev/")


def _machine(name: str, app: dict[str, Any], config: dict[str, Any], label: str) -> dict[str, Any]:
    """A started Machine of ``app`` running ``label`` with ``config``."""
    env = {**config.get("env", {}), "PRIMARY_REGION": config["primary_region"]}
    checks = [
        {
            "name": check_name,
            "status": "passing",
            "output": "HTTP GET http://localhost:8080/health: 200 OK",
            "updated_at": _now(),
        }
        for check_name in config.get("checks", {})
    ]
    return {
        "name": f"{name}-machine",
        "state": "started",
        "region": config["primary_region"],
        "instance_id": secrets.token_hex(13).upper(),
        "private_ip": "fdaa:0:1:a7b:" + secrets.token_hex(2),
        "updated_at": _now(),
        "image_ref": {
            "registry": "registry.fly.io",
            "repository": name,
            "tag": label,
            "digest": "sha256:" + secrets.token_hex(32),
            "labels": {},
        },
        "config": {
            "env": env,
            "metadata": {"fly_release_version": str(app["release"]), "fly_platform_version": "v2"},
        },
        "checks": checks,
        "secrets": sorted(app["secrets"]),
    }


def _status(state: dict[str, Any], args: argparse.Namespace) -> None:
    name = args.app
    app = _app(state, name)
    if not args.json:
        print(f"App\n  Name     = {name}\n  Hostname = {name}.fly.dev")
        for m in app["machines"]:
            print(f"{m['id']}  {m['region']}  {m['state']}  {m['image_ref']['tag']}")
        return
    machines = [{k: v for k, v in m.items() if k != "secrets"} for m in app["machines"]]
    _out({**_app_document(name, app), "Machines": machines})


# --- command line ------------------------------------------------------------------


Handler = Callable[[dict[str, Any], argparse.Namespace], None]


class _Parser(argparse.ArgumentParser):
    """An argument parser that fails like flyctl: ``Error: ...``, exit code 1."""

    def error(self, message: str) -> NoReturn:
        raise FlyError(message)


def _parser() -> _Parser:
    parser = _Parser(prog="fly", add_help=False)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(group: Any, name: str, handler: Handler, json_flag: bool = True) -> _Parser:
        sub: _Parser = group.add_parser(name, add_help=False)
        sub.set_defaults(handler=handler)
        if json_flag:
            sub.add_argument("-j", "--json", action="store_true")
        return sub

    def group(name: str) -> Any:
        return commands.add_parser(name, add_help=False).add_subparsers(
            dest="subcommand", required=True, parser_class=_Parser
        )

    command(group("auth"), "whoami", _whoami)
    command(group("platform"), "regions", _regions)

    apps = group("apps")
    command(apps, "list", _apps_list)
    create = command(apps, "create", _apps_create)
    create.add_argument("app_name", nargs="?")
    create.add_argument("--name")
    create.add_argument("-o", "--org")

    volumes = group("volumes")
    command(volumes, "list", _volumes_list).add_argument("-a", "--app")
    vcreate = command(volumes, "create", _volumes_create)
    vcreate.add_argument("volume_name")
    vcreate.add_argument("-a", "--app")
    vcreate.add_argument("-r", "--region")
    vcreate.add_argument("-s", "--size", type=int, default=1)
    vcreate.add_argument("--snapshot-retention", type=int, default=5)
    vcreate.add_argument("-y", "--yes", action="store_true")

    secrets_group = group("secrets")
    command(secrets_group, "list", _secrets_list).add_argument("-a", "--app")
    simport = command(secrets_group, "import", _secrets_import, json_flag=False)
    simport.add_argument("-a", "--app")
    simport.add_argument("--stage", action="store_true")

    deploy = command(commands, "deploy", _deploy, json_flag=False)
    deploy.add_argument("workdir", nargs="?", default=".")
    deploy.add_argument("-a", "--app")
    deploy.add_argument("-c", "--config")
    deploy.add_argument("--image-label")
    deploy.add_argument("--remote-only", action="store_true")
    deploy.add_argument("--ha", choices=("true", "false"), default="true")
    deploy.add_argument("-y", "--yes", action="store_true")

    command(commands, "status", _status).add_argument("-a", "--app")
    return parser


def main(argv: Sequence[str]) -> int:
    """Run one fly command; its exit code."""
    try:
        directory = state_dir()
        is_import = list(argv[:2]) == ["secrets", "import"]
        pairs = parse_secret_lines(sys.stdin.read()) if is_import else {}
        _log_call(directory, argv, sorted(pairs) if is_import else None)
        if os.environ.get("FAKE_FLY_LOGGED_OUT") == "1":
            raise FlyError(NOT_LOGGED_IN)
        args = _parser().parse_args(argv)
        args.stdin_pairs = pairs
        state = load_state(directory)
        args.handler(state, args)
        save_state(directory, state)
    except FlyError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0
