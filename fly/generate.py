#!/usr/bin/env python3
"""Write the fly.toml of each of the four qudag-node apps from fly/template.toml.

Usage::

    python3 fly/generate.py [--regions yyz,iad,ord,ewr] [--out DIR]

App I is ``qudag-nodeI`` with node id ``nodeI``, runs in the I-th region and lists the
other three apps as its peers over Fly's private network. The files go to DIR (default:
this directory, where they are committed); ``[build] dockerfile`` is written relative to
DIR, because flyctl resolves it relative to the config file. One line per file goes to
stdout: app, node id, region and path. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import os
import re
import string
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "template.toml"
DOCKERFILE = HERE.parent / "Dockerfile"
#: The seed put node2 in yul (Montreal), which Fly withdrew in October 2025; iad (Ashburn)
#: is the nearest region Fly still offers to Montreal that no other node uses.
DEFAULT_REGIONS = ("yyz", "iad", "ord", "ewr")
APP_PREFIX = "qudag-node"
NODE_PREFIX = "node"
P2P_PORT = 7000
REGION_CODE = re.compile(r"[a-z]{3}")


@dataclass(frozen=True)
class App:
    """One Fly app: a validator of the testnet."""

    name: str
    node_id: str
    region: str

    @property
    def config_name(self) -> str:
        """File name of its fly.toml."""
        return f"{self.name}.toml"


class UsageError(Exception):
    """The regions given cannot make a testnet."""


def plan(regions: Sequence[str]) -> list[App]:
    """The apps for ``regions``, node1 first; one distinct region code per app."""
    if len(regions) != len(DEFAULT_REGIONS):
        raise UsageError(f"give {len(DEFAULT_REGIONS)} regions, one per node, not {len(regions)}")
    for region in regions:
        if not REGION_CODE.fullmatch(region):
            raise UsageError(f"{region!r} is not a region code (three lowercase letters)")
    if len(set(regions)) != len(regions):
        raise UsageError(f"the regions must differ: {','.join(regions)}")
    return [
        App(f"{APP_PREFIX}{i}", f"{NODE_PREFIX}{i}", region)
        for i, region in enumerate(regions, start=1)
    ]


def render(template: str, app: App, apps: Sequence[App], dockerfile: str) -> str:
    """The fly.toml of ``app``: ``template`` with its placeholders filled in."""
    peers = ",".join(f"{other.name}.internal:{P2P_PORT}" for other in apps if other != app)
    return string.Template(template).substitute(
        app=app.name,
        region=app.region,
        node_id=app.node_id,
        peers=peers,
        dockerfile=dockerfile,
    )


def write_configs(regions: Sequence[str], out: Path) -> list[tuple[App, Path]]:
    """Write one fly.toml per app into ``out``; the apps with the files written."""
    apps = plan(regions)
    template = TEMPLATE.read_text(encoding="utf-8")
    directory = out.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    dockerfile = os.path.relpath(DOCKERFILE, directory)
    written = []
    for app in apps:
        path = directory / app.config_name
        path.write_text(render(template, app, apps, dockerfile), encoding="utf-8")
        written.append((app, path))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, write the files, print what was written."""
    parser = argparse.ArgumentParser(
        prog="generate.py", description="Write fly/qudag-nodeN.toml from fly/template.toml."
    )
    parser.add_argument(
        "--regions",
        default=",".join(DEFAULT_REGIONS),
        help="comma-separated region codes for node1..node4 (default %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=HERE, help="directory for the files (default: fly/)"
    )
    args = parser.parse_args(argv)
    regions = [r.strip() for r in str(args.regions).split(",")]
    try:
        written = write_configs(regions, args.out)
    except UsageError as e:
        print(f"generate.py: {e}", file=sys.stderr)
        return 2
    for app, path in written:
        print(f"{app.name} {app.node_id} {app.region} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
