"""The container image: its lock file, build context and scripts, and the node running in
it under podman, as root and as uid 10001."""

from __future__ import annotations

import itertools
import re
import secrets
import stat
import subprocess
import time
import tomllib
from collections.abc import Iterable
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests import containers
from tests.containers import START_TIMEOUT, Container, Image, podman, running, volume
from tests.nodeproc import metric, request, submit_json, wait_until
from tests.tools import require_tool

pytestmark = pytest.mark.xdist_group("containers")

ROOT = containers.ROOT
QUDAG_UID = "10001"
#: Seconds `podman stop` may take: the node stops within a fraction of a second.
STOP_SECONDS = 5.0
#: What our layers may add to the base image (the venv is about 100 MB, most of it numpy).
MAX_ADDED_BYTES = 150_000_000
SHA256 = re.compile(r"--hash=sha256:[0-9a-f]{64}")
#: The cipher suites of TLS 1.3 that OpenSSL offers by default (RFC 8446, B.4).
TLS13_SUITES = {"TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"}


# --- requirements.lock -------------------------------------------------------------


def lock_pins(text: str) -> dict[str, tuple[Version, list[str]]]:
    """The pins of a ``pip-compile --generate-hashes`` file: name -> (version, hashes)."""
    pins: dict[str, tuple[Version, list[str]]] = {}
    name = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0].isspace():
            assert name is not None, f"a continuation line before any requirement: {line!r}"
            pins[name][1].append(stripped.removesuffix("\\").strip())
            continue
        requirement = Requirement(stripped.removesuffix("\\").strip())
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{requirement} is not pinned"
        name = canonicalize_name(requirement.name)
        pins[name] = (Version(specifier.version), [])
    return pins


def test_lock_pins_every_runtime_dependency_within_its_range_with_hashes() -> None:
    text = (ROOT / "requirements.lock").read_text()
    header = itertools.takewhile(lambda line: line.startswith("#"), text.splitlines())
    assert any("pip-compile --generate-hashes" in line for line in header), (
        "the command that regenerates the lock belongs in a comment at its top"
    )
    pins = lock_pins(text)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for raw in project["dependencies"]:
        dependency = Requirement(raw)
        name = canonicalize_name(dependency.name)
        assert name in pins, f"{name} is not in requirements.lock"
        version, _ = pins[name]
        assert dependency.specifier.contains(version), f"{name}=={version} is not {dependency}"
    for pinned, (version, hashes) in pins.items():
        assert hashes, f"{pinned}=={version} has no hash"
        for entry in hashes:
            assert SHA256.fullmatch(entry), f"{pinned}: {entry!r} is not a sha256 hash"


def test_lock_reader_rejects_a_range_and_sees_a_missing_hash() -> None:
    with pytest.raises(AssertionError, match="not pinned"):
        lock_pins("numpy>=1.26 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    assert lock_pins("numpy==2.0\n") == {"numpy": (Version("2.0"), [])}


# --- the build context -------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regular expression: ``*`` and ``?`` stay within one
    path element, ``**`` spans any number of them."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out.append(pattern[i : end + 1])
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def excluded(path: str, lines: Iterable[str]) -> bool:
    """Whether a build context leaves out ``path`` (relative, with ``/``) under these
    .dockerignore lines: the last pattern that matches the path or one of its parent
    directories decides, ``!`` patterns taking the path back in."""
    prefixes = [path.split("/")[: n + 1] for n in range(path.count("/") + 1)]
    candidates = ["/".join(parts) for parts in prefixes]
    result = False
    for line in lines:
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        keep = pattern.startswith("!")
        regex = _pattern_regex(pattern.removeprefix("!").strip().strip("/"))
        if any(regex.fullmatch(c) for c in candidates):
            result = not keep
    return result


def copied_sources() -> list[str]:
    """The build-context paths the Dockerfile's COPY instructions name."""
    sources: list[str] = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("--from") for w in words):
            continue
        sources.extend(w for w in words[1:-1] if not w.startswith("--"))
    return sources


def test_dockerignore_keeps_out_everything_but_what_the_dockerfile_copies() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    left_out = [
        ".git/HEAD",
        ".venv/bin/python",
        ".env",
        "tests/deploy/test_container.py",
        "bench/ingest.py",
        "docs/metrics.md",
        "data/qudag.db",
        "testnet/node1/node.key",
        "fly/fly.toml",
        "monitoring/prometheus.yml",
        "scripts/local-base-image.sh",
        ".mypy_cache/3.11/cache.db",
        ".ruff_cache/CACHEDIR.TAG",
        ".pytest_cache/README.md",
        ".hypothesis/examples/x",
        "__pycache__/x.cpython-311.pyc",
        "qudag_node/__pycache__/cli.cpython-311.pyc",
        "qudag_node/core/__pycache__/dag.cpython-312.pyc",
        "qudag_node.egg-info/PKG-INFO",
    ]
    for relative in left_out:
        assert excluded(relative, lines), f".dockerignore lets {relative} into the build context"

    sources = copied_sources()
    assert {"requirements.lock", "pyproject.toml", "README.md", "qudag_node"} <= set(sources)
    copied = []
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"the Dockerfile copies {source}, which does not exist"
        files = path.rglob("*") if path.is_dir() else [path]
        copied += [f for f in files if f.is_file() and "__pycache__" not in f.parts]
    assert ROOT / "qudag_node" / "core" / "engine.py" in copied
    for file in copied:
        name = file.relative_to(ROOT).as_posix()
        assert not excluded(name, lines), f".dockerignore leaves out {name}"


def test_dockerignore_reading_follows_the_rules() -> None:
    lines = ["docs", "**/*.pyc", "!docs/keep.md", "/build/"]
    assert excluded("docs/a/b.md", lines)
    assert not excluded("docs/keep.md", lines)
    assert excluded("a/b/c.pyc", lines)
    assert excluded("build/lib/x.py", lines)
    assert not excluded("documents/a.md", lines)
    assert not excluded("src/build", ["build"])


# --- scripts -----------------------------------------------------------------------


@pytest.mark.parametrize("script", ["docker/entrypoint.sh", "scripts/local-base-image.sh"])
def test_script_is_executable_and_passes_shellcheck(script: str) -> None:
    path = ROOT / script
    assert path.stat().st_mode & stat.S_IXUSR, f"{script} is not executable"
    shellcheck = require_tool("shellcheck")
    done = subprocess.run(
        [shellcheck, "--severity=style", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_base_image_script_leaves_a_present_image_alone() -> None:
    require_tool("podman")
    containers.base_image()
    started = time.monotonic()
    done = subprocess.run(
        [str(ROOT / "scripts" / "local-base-image.sh")],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{containers.BASE_IMAGE} is present\n"
    assert time.monotonic() - started < 10, "an image that is present is not built again"


# --- the image under podman --------------------------------------------------------


@pytest.fixture(scope="module")
def image() -> Image:
    """The node image, built from the Dockerfile on the local base image."""
    require_tool("podman")
    built = containers.node_image()
    print(
        f"\n{built.tag}: {built.size / 1e6:.1f} MB, built in {built.build_seconds:.1f} s "
        f"on {containers.BASE_IMAGE}"
    )
    return built


def process_ids(container: Container, pid: int = 1) -> tuple[list[str], list[str]]:
    """The real, effective, saved and filesystem user and group ids of a process."""
    status = container.exec("cat", f"/proc/{pid}/status")
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return fields["Uid"].split(), fields["Gid"].split()


def owners(container: Container, *paths: str) -> list[str]:
    """``uid:gid`` of each path inside the container."""
    return container.exec("stat", "-c", "%u:%g", *paths).split()


def final_transaction(url: str, tx_id: str) -> bool:
    """Whether the node reports ``tx_id`` as final."""
    status, body = request("GET", f"{url}/api/v1/transactions/{tx_id}")
    return status == 200 and body["status"] == "final"


def test_image_config(image: Image) -> None:
    document = image.inspect()
    config = document["Config"]
    assert config["Entrypoint"] == ["/usr/local/bin/qudag-entrypoint"]
    assert config["Cmd"] == ["qudag-node", "run"], "exec form, so the daemon gets SIGTERM"
    assert config["StopSignal"] == "SIGTERM"
    assert set(config["ExposedPorts"]) == {"8080/tcp", "7000/tcp"}
    assert not config.get("Volumes"), "no VOLUME: podman would make an anonymous one per run"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["QUDAG_DATA_DIR"] == "/data"
    assert env["QUDAG_LOG_FORMAT"] == "json"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    healthcheck = document["Healthcheck"]
    assert healthcheck["Test"][0] == "CMD"
    assert "/health" in " ".join(healthcheck["Test"])
    assert healthcheck["Interval"] > 0

    base_size = Image(containers.BASE_IMAGE, 0).size
    added = image.size - base_size
    print(f"\nthe node's layers add {added / 1e6:.1f} MB to {base_size / 1e6:.1f} MB of base")
    assert added < MAX_ADDED_BYTES


def test_node_runs_as_qudag_keeps_its_data_and_stops_cleanly(image: Image) -> None:
    with volume() as data:
        with running(image.tag, "-v", f"{data}:/data") as container:
            url = container.wait_healthy()
            status, body = submit_json(url, [b"kept across restarts"], wait=True)
            assert status == 200, body
            assert body["status"] == "final"
            (tx_id,) = body["ids"]
            assert final_transaction(url, tx_id)
            _, node_status = request("GET", f"{url}/api/v1/status")
            public_key = node_status["node"]["public_key"]

            assert process_ids(container) == ([QUDAG_UID] * 4, [QUDAG_UID] * 4)
            programs = container.exec("ls", "/opt/venv/bin").split()
            assert "qudag-node" in programs
            assert "pip" not in programs, "nothing is installed at run time"
            owner = f"{QUDAG_UID}:{QUDAG_UID}"
            assert owners(container, "/data", "/data/qudag.db", "/data/node.key") == [owner] * 3
            podman("healthcheck", "run", container.id)  # the image's HEALTHCHECK passes

            started = time.monotonic()
            podman("stop", "--time", "30", container.id)
            stop_seconds = time.monotonic() - started
            print(f"\npodman stop took {stop_seconds:.2f} s")
            assert stop_seconds < STOP_SECONDS
            assert container.state("ExitCode") == "0", container.logs()
            events = container.log_events()
            assert events[-2:] == ["stopping", "stopped"], container.logs()

        with running(image.tag, "-v", f"{data}:/data") as again:
            url = again.wait_healthy()
            assert final_transaction(url, tx_id), "the transaction is kept on the volume"
            _, node_status = request("GET", f"{url}/api/v1/status")
            assert node_status["node"]["public_key"] == public_key


def test_root_owned_data_dir_is_handed_to_qudag(image: Image, tmp_path: Path) -> None:
    """Like a fresh Fly volume: /data owned by root, with a file from a restore as root."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "restored-by-root").write_text("x")
    assert data.stat().st_uid != int(QUDAG_UID)
    with running(image.tag, "-v", f"{data}:/data") as container:
        container.wait_healthy()
        assert process_ids(container)[0] == [QUDAG_UID] * 4
        paths = ("/data", "/data/restored-by-root", "/data/qudag.db")
        assert owners(container, *paths) == [f"{QUDAG_UID}:{QUDAG_UID}"] * len(paths)


def test_image_runs_as_uid_10001_from_the_start(image: Image) -> None:
    with (
        volume() as data,
        running(image.tag, "--user", QUDAG_UID, "-v", f"{data}:/data") as container,
    ):
        url = container.wait_healthy()
        assert process_ids(container) == ([QUDAG_UID] * 4, [QUDAG_UID] * 4)
        status, body = submit_json(url, [b"as uid 10001"], wait=True)
        assert status == 200, body
        assert owners(container, "/data/qudag.db") == [f"{QUDAG_UID}:{QUDAG_UID}"]


# --- the peer port's TLS -------------------------------------------------------------


def s_client_summary(container: Container) -> dict[str, str]:
    """The ``Name: value`` lines that the image's own ``openssl s_client -brief`` prints
    of a TLS 1.3 handshake with the node's peer port (it leaves right after). What it
    prints of the node's first frame (binary, when it arrives in time) is left out."""
    command = "openssl s_client -connect 127.0.0.1:7000 -tls1_3 -brief -no-interactive"
    text_only = r"tr -cd '\11\12\40-\176'"
    printed = container.exec("sh", "-c", f"{command} </dev/null 2>&1 | {text_only}")
    return dict(line.split(": ", 1) for line in printed.splitlines() if ": " in line)


def test_peer_port_negotiates_tls13_with_the_hybrid_post_quantum_group(image: Image) -> None:
    """The image's OpenSSL (Debian trixie's 3.5) offers X25519MLKEM768 at both ends: the
    node's listener and the image's own openssl program, as an operator runs it."""
    token = secrets.token_hex(32)  # the peer port opens only with a peer token
    with running(image.tag, "-e", f"PEER_AUTH_TOKEN={token}") as container:
        url = container.wait_healthy()
        _, node_status = request("GET", f"{url}/api/v1/status")
        node = node_status["node"]
        assert node["peer_transport"] == "tls"
        assert re.fullmatch(r"OpenSSL 3\.([5-9]|\d\d+)\.\d+ .*", node["openssl"]), node

        summary = s_client_summary(container)
        print(f"\nopenssl s_client against the peer port: {summary}")
        assert summary["Protocol version"] == "TLSv1.3", summary
        assert summary["Negotiated TLS1.3 group"] == "X25519MLKEM768", summary
        assert summary["Ciphersuite"] in TLS13_SUITES, summary
        assert summary["Peer certificate"] == f"CN=qudag-link {node['node_id'][:16]}", summary
        # the node timed the TLS handshake; the probe then left without a HELLO
        wait_until(
            lambda: metric(url, "qudag_peer_tls_handshake_seconds_count") == 1,
            START_TIMEOUT,
            "the node to count the TLS handshake",
        )
        failures = {"reason": "connection_lost"}
        wait_until(
            lambda: metric(url, "qudag_peer_handshake_failures_total", failures) == 1,
            START_TIMEOUT,
            "the node to count the probe as a handshake that never came",
        )
