"""Podman for the container tests: the images, built once per session, and containers
that are always removed.

Podman runs rootful, with runc and cgroupfs (see ``RUNTIME``); images are built with
chroot isolation on the host's network, in the Docker format (the OCI format drops
HEALTHCHECK). The node image is built on a local Debian base made by
``scripts/local-base-image.sh``, so no container registry is needed.
"""

from __future__ import annotations

import functools
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.nodeproc import request, wait_until
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "localhost/trixie-python:local"
NODE_IMAGE = "localhost/qudag-node:test"
PROMETHEUS_IMAGE = "localhost/prometheus-debian:test"
PROMETHEUS_CONTAINERFILE = ROOT / "tests" / "containers" / "prometheus.Containerfile"
#: Global podman options for hosts without systemd cgroup delegation, where crun and
#: the systemd cgroup manager fail.
RUNTIME = ("--runtime", "runc", "--cgroup-manager=cgroupfs")
_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
#: podman build options: the host's CA bundle lets pip and apt reach their archives.
_BUILD_OPTIONS = (
    "--isolation=chroot",
    "--network=host",
    "--format",
    "docker",
    "-v",
    f"{_CA_BUNDLE}:{_CA_BUNDLE}:ro",
    "--build-arg",
    f"BASE_IMAGE={BASE_IMAGE}",
)
#: Seconds a build (a fresh one downloads every dependency) or the base image may take.
BUILD_TIMEOUT = 900.0
#: Seconds any other podman command may take.
COMMAND_TIMEOUT = 120.0
#: Seconds a node in a container has to answer /health.
START_TIMEOUT = 60.0


class PodmanError(AssertionError):
    """A podman command failed; the message holds its output."""


def podman(*args: str, timeout: float = COMMAND_TIMEOUT) -> str:
    """Run ``podman RUNTIME ARGS``; its stdout. Raises :class:`PodmanError` on failure."""
    return _checked(["podman", *RUNTIME, *args], f"podman {' '.join(args)}", timeout)


def _checked(command: list[str], name: str, timeout: float) -> str:
    """Run ``command``; its stdout. Raises :class:`PodmanError` naming ``name`` with the
    output when it fails."""
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise PodmanError(f"{name} exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


@functools.cache
def base_image() -> str:
    """The local Debian base image, made by scripts/local-base-image.sh when missing
    (which needs debootstrap, and root)."""
    exists = subprocess.run(["podman", "image", "exists", BASE_IMAGE], check=False)
    if exists.returncode != 0:
        require_tool("debootstrap")
    script = ROOT / "scripts" / "local-base-image.sh"
    _checked([str(script), BASE_IMAGE], str(script), BUILD_TIMEOUT)
    return BASE_IMAGE


@dataclass(frozen=True)
class Image:
    """An image built by :func:`build`."""

    tag: str
    build_seconds: float

    def inspect(self) -> dict[str, Any]:
        """``podman image inspect`` of the image."""
        document: list[dict[str, Any]] = json.loads(podman("image", "inspect", self.tag))
        return document[0]

    @property
    def size(self) -> int:
        """The image's size in bytes, its base included."""
        return int(podman("image", "inspect", "--format", "{{.Size}}", self.tag))


def build(tag: str, containerfile: Path, context: Path) -> Image:
    """Build ``containerfile`` in ``context`` on the local base image as ``tag``."""
    base_image()
    started = time.monotonic()
    podman(
        "build",
        *_BUILD_OPTIONS,
        "-f",
        str(containerfile),
        "-t",
        tag,
        str(context),
        timeout=BUILD_TIMEOUT,
    )
    return Image(tag, time.monotonic() - started)


@functools.cache
def node_image() -> Image:
    """The project's image from its Dockerfile, built once per test session."""
    return build(NODE_IMAGE, ROOT / "Dockerfile", ROOT)


@functools.cache
def prometheus_image() -> Image:
    """The test-only Prometheus image (tests/containers/prometheus.Containerfile)."""
    return build(PROMETHEUS_IMAGE, PROMETHEUS_CONTAINERFILE, PROMETHEUS_CONTAINERFILE.parent)


@dataclass(frozen=True)
class Container:
    """A container started by :func:`running`."""

    id: str

    def host_port(self, container_port: int) -> int:
        """The 127.0.0.1 port that ``container_port`` is published on."""
        address = podman("port", self.id, f"{container_port}/tcp").strip()
        return int(address.rsplit(":", 1)[1])

    def api_url(self) -> str:
        """Base URL of the node API (container port 8080) on the host."""
        return f"http://127.0.0.1:{self.host_port(8080)}"

    def exec(self, *command: str) -> str:
        """Run ``command`` in the container (as root); its stdout."""
        return podman("exec", self.id, *command)

    def state(self, field: str) -> str:
        """One field of the container's state, e.g. ``ExitCode`` or ``Running``."""
        return podman("inspect", "--format", f"{{{{.State.{field}}}}}", self.id).strip()

    def logs(self) -> str:
        """Everything the container wrote to stdout and stderr."""
        done = subprocess.run(
            ["podman", *RUNTIME, "logs", self.id],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=True,
        )
        return done.stdout + done.stderr

    def log_events(self) -> list[str]:
        """The ``event`` of every JSON log line, in order."""
        events = []
        for line in self.logs().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "event" in record:
                events.append(str(record["event"]))
        return events

    def wait_healthy(self) -> str:
        """Wait until the node answers ``GET /health`` with 200; its base URL."""
        url = self.api_url()

        def healthy() -> bool:
            if self.state("Running") != "true":
                raise AssertionError(f"the container stopped:\n{self.logs()}")
            return request("GET", f"{url}/health", timeout=5)[0] == 200

        wait_until(healthy, START_TIMEOUT, f"/health of container {self.id[:12]}")
        return url


@contextmanager
def running(image: str, *options: str) -> Iterator[Container]:
    """A container of ``image`` started with ``podman run -d OPTIONS``, its API published
    on a port podman picks on 127.0.0.1; removed (with its anonymous volumes) at the end."""
    container_id = podman("run", "-d", "-p", "127.0.0.1::8080", *options, image).strip()
    try:
        yield Container(container_id)
    finally:
        podman("rm", "--force", "--volumes", "--time", "5", container_id)


@contextmanager
def volume() -> Iterator[str]:
    """A new named volume; removed at the end."""
    name = podman("volume", "create").strip()
    try:
        yield name
    finally:
        podman("volume", "rm", "--force", name)
