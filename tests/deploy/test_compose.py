"""docker-compose.yml under podman-compose: four validators and Prometheus come up,
agree on one log and are scraped; ``down -v`` leaves nothing behind.

Each run works in a copy of the compose file and monitoring/ in a temporary directory,
with the .env written there by ``qudag-node network-env``; it reuses the node image the
container tests build (QUDAG_IMAGE) and a Prometheus built from Debian's package
(PROMETHEUS_IMAGE), so that it needs no container registry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bench.ports import free_ports
from tests import containers
from tests.containers import RUNTIME, podman
from tests.nodeproc import request, submit_json, wait_until
from tests.system.test_cli import cli
from tests.tools import require_tool

pytestmark = pytest.mark.xdist_group("containers")

NODES = 4
#: Seconds for every node to answer /health after `up`, and for the network to agree.
CONVERGE_TIMEOUT = 90.0
#: Seconds for Prometheus to scrape every node (its scrape interval is 15 s).
SCRAPE_TIMEOUT = 90.0
COMPOSE_TIMEOUT = 300.0
MISSING_ENV_MESSAGE = "run qudag-node network-env --nodes 4 --output .env first"


@dataclass(frozen=True)
class Project:
    """A compose project in its own directory, on its own host ports."""

    name: str
    directory: Path
    node_ports: list[int]
    prometheus_port: int
    #: Not in the repr, which pytest may show when an assertion fails.
    secrets: list[str] = field(repr=False)

    @property
    def node_urls(self) -> list[str]:
        """Base URLs of node1..node4's APIs on the host."""
        return [f"http://127.0.0.1:{port}" for port in self.node_ports]

    def compose(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``podman-compose -p NAME ARGS`` in the project's directory."""
        env = {
            **os.environ,
            "QUDAG_IMAGE": containers.NODE_IMAGE,
            "PROMETHEUS_IMAGE": containers.PROMETHEUS_IMAGE,
            "QUDAG_PROMETHEUS_PORT": str(self.prometheus_port),
            **{f"QUDAG_NODE{i}_PORT": str(p) for i, p in enumerate(self.node_ports, 1)},
        }
        return subprocess.run(
            ["podman-compose", f"--podman-args={' '.join(RUNTIME)}", "-p", self.name, *args],
            cwd=self.directory,
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=COMPOSE_TIMEOUT,
            check=False,
        )

    def scrub(self, text: str) -> str:
        """``text`` without the network's secrets: podman-compose prints every podman
        command it runs, with the containers' environment."""
        for secret in self.secrets:
            text = text.replace(secret, "<secret>")
        return text

    def check(self, done: subprocess.CompletedProcess[str]) -> None:
        """Fail, showing the scrubbed output, when a compose command failed."""
        code = done.returncode
        command = " ".join(done.args[4:])
        output = self.scrub(done.stdout + done.stderr)
        assert code == 0, f"podman-compose {command} exited with {code}:\n{output}"

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, volumes and networks of this project that still exist, by kind."""
        label = f"label=io.podman.compose.project={self.name}"
        return {
            kind: podman(*listing, "--filter", label, "--format", field).split()
            for kind, listing, field in (
                ("container", ("ps", "--all"), "{{.Names}}"),
                ("volume", ("volume", "ls"), "{{.Name}}"),
                ("network", ("network", "ls"), "{{.Name}}"),
            )
        }

    def purge(self) -> None:
        """Remove whatever of this project is left, without podman-compose."""
        found = self.leftovers()
        for container in found["container"]:
            podman("rm", "--force", "--volumes", container)
        for kind in ("volume", "network"):
            for name in found[kind]:
                podman(kind, "rm", "--force", name)

    def take_down(self) -> None:
        """``down -v``; then the network, which podman-compose 1.0 leaves behind."""
        try:
            self.check(self.compose("down", "-v"))
        finally:
            left = self.leftovers()
            self.purge()
        assert left["container"] == left["volume"] == [], f"down -v left {left}"


def new_project(directory: Path, with_env: bool) -> Project:
    """A copy of docker-compose.yml and monitoring/ in ``directory``, with the .env of a
    new network when ``with_env``, and free host ports."""
    shutil.copy(containers.ROOT / "docker-compose.yml", directory)
    shutil.copytree(containers.ROOT / "monitoring", directory / "monitoring")
    secrets = []
    if with_env:
        result = cli("network-env", "--nodes", str(NODES), "--output", str(directory / ".env"))
        assert result.code == 0, result.stderr
        for line in (directory / ".env").read_text().splitlines():
            name, _, value = line.partition("=")
            if name.endswith(("_PRIVATE_KEY", "_TOKEN")):
                secrets.append(value)
    *node_ports, prometheus_port = free_ports(NODES + 1)
    name = f"qudagtest{os.getpid()}{'env' if with_env else 'noenv'}"
    return Project(name, directory, node_ports, prometheus_port, secrets)


@pytest.fixture
def compose_testnet(tmp_path: Path) -> Iterator[Project]:
    """The compose testnet, up; always taken down with its volumes."""
    require_tool("podman")
    require_tool("podman-compose")
    for image in (containers.node_image(), containers.prometheus_image()):
        print(f"\n{image.tag}: {image.size / 1e6:.1f} MB, built in {image.build_seconds:.1f} s")
    project = new_project(tmp_path, with_env=True)
    started = time.monotonic()
    try:
        project.check(project.compose("up", "-d"))
        print(f"podman-compose up -d took {time.monotonic() - started:.1f} s")
        yield project
    finally:
        project.take_down()


def status(url: str) -> dict[str, Any]:
    """The node's status document; fails unless it answers."""
    code, body = request("GET", f"{url}/api/v1/status", timeout=5)
    assert code == 200, body
    assert isinstance(body, dict)
    return body


def peers(url: str) -> list[dict[str, Any]]:
    """The node's ``/api/v1/peers``."""
    code, body = request("GET", f"{url}/api/v1/peers", timeout=5)
    assert code == 200, body
    found: list[dict[str, Any]] = body["peers"]
    return found


def logged_tx_ids(url: str) -> set[str]:
    """The ids in the node's finalized log (the first thousand entries)."""
    code, body = request("GET", f"{url}/api/v1/log?from=1&limit=1000", timeout=5)
    assert code == 200, body
    return {entry["tx_id"] for entry in body["entries"]}


def prometheus_series(port: int, query: str) -> list[dict[str, Any]]:
    """The result of an instant query; empty while Prometheus does not answer."""
    code, body = request("GET", f"http://127.0.0.1:{port}/api/v1/query?query={query}", timeout=5)
    if code != 200 or body.get("status") != "success":
        return []
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_four_validators_agree_and_prometheus_scrapes_them(compose_testnet: Project) -> None:
    started = time.monotonic()
    urls = compose_testnet.node_urls

    def all_healthy() -> bool:
        return all(request("GET", f"{url}/health", timeout=5)[0] == 200 for url in urls)

    wait_until(all_healthy, CONVERGE_TIMEOUT, "/health of every node")
    healthy = time.monotonic() - started
    names = [status(url)["node"]["id"] for url in urls]
    assert names == [f"node{i}" for i in range(1, NODES + 1)]
    assert {status(url)["node"]["role"] for url in urls} == {"validator"}

    code, body = submit_json(urls[0], [f"compose tx {i}".encode() for i in range(3)], wait=True)
    assert code == 200, body
    tx_ids = set(body["ids"])

    def agreed() -> bool:
        heads = [status(url)["log"] for url in urls]
        if len({head["hash"] for head in heads}) != 1 or heads[0]["length"] < len(tx_ids):
            return False
        return all(tx_ids <= logged_tx_ids(url) for url in urls)

    wait_until(agreed, CONVERGE_TIMEOUT, "all four nodes to show one log with the transactions")
    converged = time.monotonic() - started
    for url in urls:  # every link inside TLS 1.3 (the image's Python cannot name the group)
        links = [p for p in peers(url) if p["state"] == "connected"]
        assert links, f"{url} has no connected peer"
        for link in links:
            assert link["transport"] == "tls", link
            assert link["tls"]["version"] == "TLSv1.3", link
            assert link["tls"]["group"] in {None, "X25519MLKEM768"}, link

    # the explorer and what it reads, as the image serves them behind compose's ports
    code, page = request("GET", f"{urls[1]}/explorer", timeout=5)
    assert code == 200
    assert "explorer.js" in page, page[:200]
    for asset in ("explorer.js", "explorer.css"):
        assert request("GET", f"{urls[1]}/explorer/{asset}", timeout=5)[0] == 200
    code, dag = request("GET", f"{urls[1]}/api/v1/dag?rounds=5", timeout=5)
    assert code == 200
    assert dag["vertices"], dag
    with urllib.request.urlopen(f"{urls[1]}/api/v1/stream?from=1", timeout=5) as events:  # noqa: S310
        assert events.headers["Content-Type"].startswith("text/event-stream")
        head = events.readline()  # the first run's last position
        assert head.startswith(b"id: "), head
        assert events.readline() == b"event: entries\n"
        run = json.loads(events.readline().removeprefix(b"data: "))
        assert run["first"] == 1
        assert int(head[4:]) == len(run["tx_ids"])

    targets = [f"{name}:8080" for name in names]

    def scraped_all() -> bool:
        series = prometheus_series(compose_testnet.prometheus_port, "qudag_dag_nodes_total")
        return sorted(s["metric"]["instance"] for s in series) == targets

    wait_until(scraped_all, SCRAPE_TIMEOUT, "Prometheus to return qudag_dag_nodes_total of each")
    scraped = time.monotonic() - started
    for service in [*names, "prometheus"]:  # the health checks pass as podman runs them
        podman("healthcheck", "run", f"{compose_testnet.name}_{service}_1")
    print(
        f"after up: healthy in {healthy:.1f} s, one log in {converged:.1f} s, "
        f"all scraped in {scraped:.1f} s"
    )


def test_up_without_env_names_the_command_that_makes_it(tmp_path: Path) -> None:
    require_tool("podman")
    require_tool("podman-compose")
    project = new_project(tmp_path, with_env=False)
    try:
        done = project.compose("up", "-d")
        assert done.returncode != 0
        assert MISSING_ENV_MESSAGE in done.stderr
        assert project.leftovers() == {"container": [], "volume": [], "network": []}
    finally:
        project.purge()
