"""scripts/deploy.sh: shellcheck, and real runs against the stand-in ``fly`` (tests/fakefly)
with a real local network of four validators behind the verification step.

The stand-in keeps the secrets' values in its state, so the tests can check what was staged;
its calls.log holds every argv (and, for ``secrets import``, the names read from stdin).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qudag_node.config import load_settings
from qudag_node.core.crypto import Scheme, Signer
from qudag_node.core.genesis import Genesis, Validator
from qudag_node.genesis_file import format_validator_list, genesis_from_json, genesis_to_json
from tests.fakefly.flyctl import CALLS_LOG, STATE_FILE, load_state, read_calls
from tests.network import network
from tests.nodeproc import NodeProcess, request, wait_until
from tests.tools import require_tool

pytestmark = pytest.mark.xdist_group("deploy")

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "deploy.sh"
SUPPORT = REPO / "scripts" / "deploy_support.py"
FAKE_FLY = REPO / "tests" / "fakefly"
QUDAG_NODE = Path(sys.executable).parent / "qudag-node"
APPS = [f"qudag-node{i}" for i in range(1, 5)]
REGIONS = ["yyz", "iad", "ord", "ewr"]
SECRET_NAMES = ["NODE_PRIVATE_KEY", "PEER_AUTH_TOKEN", "QUDAG_API_TOKEN", "QUDAG_VALIDATORS"]
#: Where the script keeps the API token by default: beside the genesis file.
API_TOKEN_FILE = "api-token"  # noqa: S105 - a file name
API_TOKEN = "api-token-chosen-by-the-operator-0123456789"  # noqa: S105 - a test value
#: Commands that change something at Fly.
MUTATING = (["apps", "create"], ["volumes", "create"], ["secrets", "import"], ["deploy"])
#: Variables of the caller's environment that would change what the script or stand-in do.
CLEARED = ("FAKE_FLY_", "QUDAG_")


@dataclass
class Run:
    """One run of the script: exit code, output (stdout and stderr) and the fly calls."""

    returncode: int
    output: str
    calls: list[list[str]]

    def of(self, *command: str) -> list[list[str]]:
        """The calls of one fly command, e.g. ``of("volumes", "create")``."""
        return [argv for argv in self.calls if argv[: len(command)] == list(command)]

    def changes(self) -> list[list[str]]:
        """The calls that change something."""
        return [argv for argv in self.calls if any(argv[: len(m)] == m for m in MUTATING)]


@dataclass
class Deployment:
    """The result of the first run, shared by the tests of this module."""

    state_dir: Path
    genesis: Path
    urls: list[str]
    run: Run


def option(argv: list[str], name: str) -> str:
    """The value after flag ``name`` in ``argv``."""
    return argv[argv.index(name) + 1]


def deploy(state_dir: Path, *args: str, path: str | None = None, **env: str) -> Run:
    """Run scripts/deploy.sh with the stand-in and this Python's bin directory first on PATH
    (or with ``path``), and the stand-in's state in ``state_dir``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    already = len(read_calls(state_dir))
    environment = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED)}
    environment.update(
        PATH=path or os.pathsep.join([str(FAKE_FLY), str(QUDAG_NODE.parent), os.environ["PATH"]]),
        FAKE_FLY_STATE=str(state_dir),
        QUDAG_NODE=str(QUDAG_NODE),
        **env,
    )
    result = subprocess.run(
        ["bash", str(SCRIPT), *args],
        check=False,
        cwd=state_dir,  # the script finds the repository by itself
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    calls = [c["argv"] for c in read_calls(state_dir)[already:]]
    return Run(result.returncode, result.stdout, calls)


def imports(state_dir: Path) -> list[dict[str, Any]]:
    """Every ``secrets import`` call logged in ``state_dir``, with its stdin names."""
    return [c for c in read_calls(state_dir) if c["argv"][:2] == ["secrets", "import"]]


def secret_values(state_dir: Path, name: str) -> list[str]:
    """The value of secret ``name`` of each app, node1 first."""
    apps = load_state(state_dir)["apps"]
    return [apps[app]["secrets"][name]["value"] for app in APPS]


def copy_deployment(deployment: Deployment, to: Path) -> tuple[Path, Path]:
    """A copy of the first run's Fly state and genesis file, to change without affecting
    the other tests: (state dir, genesis path)."""
    state_dir = to / "fly"
    state_dir.mkdir()
    shutil.copy(deployment.state_dir / STATE_FILE, state_dir / STATE_FILE)
    genesis = to / "genesis.json"
    shutil.copy(deployment.genesis, genesis)
    token_file = deployment.genesis.parent / API_TOKEN_FILE
    if token_file.exists():
        shutil.copy(token_file, to / API_TOKEN_FILE)
    return state_dir, genesis


def unset_secret(state_dir: Path, app: str, name: str) -> None:
    """Remove one secret of one app from the stand-in's state, as `fly secrets unset` would."""
    state = load_state(state_dir)
    del state["apps"][app]["secrets"][name]
    (state_dir / STATE_FILE).write_text(json.dumps(state))


# --- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def node_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """A real network of four validators on loopback; the URLs of their APIs."""
    with network(tmp_path_factory.mktemp("network")) as net:
        for name in net.validators:
            net.start(name, ready=False)
        wait_until(lambda: all(net.is_ready(n) for n in net.validators), 60, "all ready")
        yield [net.members[n].url for n in net.validators]


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory, node_urls: list[str]) -> Deployment:
    """The first run against a Fly account without the apps."""
    root = tmp_path_factory.mktemp("first")
    genesis = root / "genesis.json"
    run = deploy(root / "fly", "--genesis", str(genesis), "--urls", ",".join(node_urls))
    return Deployment(root / "fly", genesis, node_urls, run)


# --- tests -------------------------------------------------------------------------


def test_shellcheck_finds_nothing() -> None:
    shellcheck = require_tool("shellcheck")
    result = subprocess.run(
        [shellcheck, str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_first_run_creates_apps_volumes_secrets_and_deploys(first: Deployment) -> None:
    run = first.run
    assert run.returncode == 0, run.output
    state = load_state(first.state_dir)["apps"]
    assert sorted(state) == APPS
    assert [argv[2] for argv in run.of("apps", "create")] == APPS

    for app, region in zip(APPS, REGIONS, strict=True):
        volumes = state[app]["volumes"]
        assert [(v["name"], v["region"], v["size_gb"]) for v in volumes] == [
            ("dag_data", region, 1)
        ]
    assert [(option(a, "-a"), option(a, "--region")) for a in run.of("volumes", "create")] == list(
        zip(APPS, REGIONS, strict=True)
    )

    staged = imports(first.state_dir)
    assert [(option(c["argv"], "-a"), c["stdin_names"]) for c in staged] == [
        (app, sorted(SECRET_NAMES)) for app in APPS
    ]
    assert all("--stage" in c["argv"] for c in staged)
    tokens = secret_values(first.state_dir, "PEER_AUTH_TOKEN")
    assert len(set(tokens)) == 1  # one shared token
    assert len(tokens[0]) >= 32
    api_tokens = secret_values(first.state_dir, "QUDAG_API_TOKEN")
    assert len(set(api_tokens)) == 1  # one token for the clients of all four
    assert len(api_tokens[0]) >= 32
    assert api_tokens[0] != tokens[0]
    # Fly never shows it again: the operator's copy, readable by the operator alone
    token_file = first.genesis.parent / API_TOKEN_FILE
    assert token_file.read_text() == api_tokens[0] + "\n"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert len(tokens[0]) == 64  # 256 bits as hex, accepted by the node's token rule
    assert int(tokens[0], 16) >= 0
    assert load_settings({"PEER_AUTH_TOKEN": tokens[0]}).peer_auth_token is not None

    deploys = run.of("deploy")
    assert [option(argv, "-a") for argv in deploys] == APPS
    for argv, app, region in zip(deploys, APPS, REGIONS, strict=True):
        assert argv[1] == "."  # the repository is the build context
        assert {"--remote-only", "--ha=false", "--yes"} <= set(argv)
        [machine] = state[app]["machines"]  # one Machine: no spare from --ha
        assert machine["region"] == region
        assert machine["image_ref"]["tag"] == option(argv, "--image-label")
        assert machine["config"]["env"]["PRIMARY_REGION"] == region
        assert machine["config"]["env"]["NODE_ID"] == f"node{app[-1]}"
        assert machine["secrets"] == sorted(SECRET_NAMES)


def test_first_run_writes_the_genesis_of_the_staged_keys(first: Deployment) -> None:
    assert first.run.returncode == 0, first.run.output
    genesis = genesis_from_json(first.genesis.read_text(encoding="utf-8"), str(first.genesis))
    assert genesis.network_id == "qudag-testnet"
    assert genesis.scheme is Scheme.MLDSA65_ED25519  # the default of new networks
    keys = secret_values(first.state_dir, "NODE_PRIVATE_KEY")
    assert [len(key) for key in keys] == [128] * 4
    signers = [Signer(bytes.fromhex(key)) for key in keys]
    assert [(v.name, v.public_key) for v in genesis.validators] == [
        (f"node{i}", signer.public_key) for i, signer in enumerate(signers, 1)
    ]
    # What the apps get as QUDAG_VALIDATORS defines the very network of the file: the
    # four composite keys whole (some 16 kB), and each app's key is one of them.
    for signer, validators in zip(
        signers, secret_values(first.state_dir, "QUDAG_VALIDATORS"), strict=True
    ):
        assert validators == format_validator_list(genesis.validators)
        assert len(validators) > 4 * 3968
        settings = load_settings({"NETWORK_MODE": "testnet", "QUDAG_VALIDATORS": validators})
        own = settings.genesis(signer.public_key)
        assert own.hash == genesis.hash
        assert own.index_of(signer.node_id) is not None


def test_first_run_sees_one_transaction_final_on_all_four_nodes(first: Deployment) -> None:
    assert first.run.returncode == 0, first.run.output
    finals = [line for line in first.run.output.splitlines() if " final at log position " in line]
    assert len(finals) == 4
    tx_ids = {line.split("transaction ")[1].split()[0] for line in finals}
    assert len(tx_ids) == 1
    [tx] = tx_ids
    for app, url, line in zip(APPS, first.urls, finals, strict=True):
        assert line.startswith(f"{app} ({url}): transaction {tx} final")
        code, body = request("GET", f"{url}/api/v1/transactions/{tx}", timeout=10)
        assert code == 200, body
        assert body["status"] == "final", body
    for app in APPS:
        assert f"{app}: 1 machine(s) started, 1 check(s) passing" in first.run.output


def test_secrets_never_appear_in_output_or_call_log(first: Deployment) -> None:
    assert first.run.returncode == 0, first.run.output
    values = [
        *secret_values(first.state_dir, "NODE_PRIVATE_KEY"),
        *secret_values(first.state_dir, "PEER_AUTH_TOKEN")[:1],
        *secret_values(first.state_dir, "QUDAG_API_TOKEN")[:1],
    ]
    call_log = (first.state_dir / CALLS_LOG).read_text()
    genesis = first.genesis.read_text()
    for value in values:
        assert value not in first.run.output
        assert value not in call_log
    for key in values[:4]:
        assert key not in genesis
    assert values[-1] not in genesis
    assert "NODE_PRIVATE_KEY=<new>" in first.run.output
    assert "QUDAG_API_TOKEN=<set>" in first.run.output


def test_second_run_changes_nothing(first: Deployment) -> None:
    assert first.run.returncode == 0, first.run.output
    genesis_before = first.genesis.read_bytes()
    again = deploy(first.state_dir, "--genesis", str(first.genesis), "--urls", ",".join(first.urls))
    assert again.returncode == 0, again.output
    assert again.changes() == []
    assert again.output.count("already: not deployed") == 4
    assert first.genesis.read_bytes() == genesis_before
    assert "Done:" in again.output


def test_rotate_token_stages_a_new_token_on_all_four(first: Deployment, tmp_path: Path) -> None:
    state_dir, genesis = copy_deployment(first, tmp_path)
    old_token = secret_values(state_dir, "PEER_AUTH_TOKEN")[0]
    keys = secret_values(state_dir, "NODE_PRIVATE_KEY")
    run = deploy(
        state_dir, "--rotate-token", "--genesis", str(genesis), "--urls", ",".join(first.urls)
    )
    assert run.returncode == 0, run.output
    assert [c["stdin_names"] for c in imports(state_dir)] == [["PEER_AUTH_TOKEN"]] * 4
    tokens = secret_values(state_dir, "PEER_AUTH_TOKEN")
    assert len(set(tokens)) == 1
    assert tokens[0] != old_token
    assert secret_values(state_dir, "NODE_PRIVATE_KEY") == keys
    # Staged secrets reach a Machine only with a deploy: all four are deployed again.
    assert [option(argv, "-a") for argv in run.of("deploy")] == APPS


def test_token_on_some_apps_only_stops(first: Deployment, tmp_path: Path) -> None:
    state_dir, genesis = copy_deployment(first, tmp_path)
    unset_secret(state_dir, "qudag-node3", "PEER_AUTH_TOKEN")
    run = deploy(state_dir, "--genesis", str(genesis), "--urls", ",".join(first.urls))
    assert run.returncode == 1
    assert "but not on qudag-node3" in run.output
    assert "--rotate-token" in run.output
    assert run.changes() == []


def test_rotate_api_token_stages_the_chosen_token_and_the_check_sends_it(
    first: Deployment, tmp_path: Path
) -> None:
    state_dir, genesis = copy_deployment(first, tmp_path)
    others = {n: secret_values(state_dir, n) for n in SECRET_NAMES if n != "QUDAG_API_TOKEN"}
    # the check transaction goes to a node that refuses writes without this token
    guarded = NodeProcess(
        tmp_path / "guarded", tmp_path / "guarded.log", {"QUDAG_API_TOKEN": API_TOKEN}
    ).start()
    try:
        urls = ",".join([guarded.url] * 4)
        run = deploy(
            state_dir,
            "--rotate-api-token",
            "--genesis",
            str(genesis),
            "--urls",
            urls,
            QUDAG_API_TOKEN=API_TOKEN,
        )
        assert run.returncode == 0, run.output
        assert [c["stdin_names"] for c in imports(state_dir)] == [["QUDAG_API_TOKEN"]] * 4
        assert secret_values(state_dir, "QUDAG_API_TOKEN") == [API_TOKEN] * 4
        assert {n: secret_values(state_dir, n) for n in others} == others
        assert [option(argv, "-a") for argv in run.of("deploy")] == APPS
        assert run.output.count(" final at log position ") == 4
        token_file = tmp_path / API_TOKEN_FILE
        assert token_file.read_text() == API_TOKEN + "\n"
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert API_TOKEN not in run.output
        assert API_TOKEN not in (state_dir / CALLS_LOG).read_text()

        # later runs take the token from the file: nothing changes, the check passes
        again = deploy(state_dir, "--genesis", str(genesis), "--urls", urls)
        assert again.returncode == 0, again.output
        assert again.changes() == []
        assert again.output.count(" final at log position ") == 4

        # without the token anywhere the script stops before changing anything
        token_file.unlink()
        lost = deploy(state_dir, "--genesis", str(genesis), "--urls", urls)
        assert lost.returncode == 1
        assert "the apps require an API token for writes" in lost.output
        assert lost.changes() == []
    finally:
        assert guarded.stop() == 0


def test_api_token_on_some_apps_only_stops(first: Deployment, tmp_path: Path) -> None:
    state_dir, genesis = copy_deployment(first, tmp_path)
    unset_secret(state_dir, "qudag-node2", "QUDAG_API_TOKEN")
    run = deploy(state_dir, "--genesis", str(genesis), "--urls", ",".join(first.urls))
    assert run.returncode == 1
    assert "QUDAG_API_TOKEN is set on qudag-node1 qudag-node3 qudag-node4 but not on" in (
        run.output
    )
    assert "--rotate-api-token" in run.output
    assert run.changes() == []


def test_lost_key_stops_without_a_new_genesis(first: Deployment, tmp_path: Path) -> None:
    state_dir, genesis = copy_deployment(first, tmp_path)
    before = genesis.read_bytes()
    unset_secret(state_dir, "qudag-node2", "NODE_PRIVATE_KEY")
    run = deploy(state_dir, "--genesis", str(genesis), "--urls", ",".join(first.urls))
    assert run.returncode == 1
    assert f"{genesis} lists the public key of node2, but qudag-node2 has no" in run.output
    assert run.changes() == []
    assert genesis.read_bytes() == before


def test_key_without_genesis_stops(first: Deployment, tmp_path: Path) -> None:
    state_dir, genesis = copy_deployment(first, tmp_path)
    genesis.unlink()
    run = deploy(state_dir, "--genesis", str(genesis), "--urls", ",".join(first.urls))
    assert run.returncode == 1
    assert f"qudag-node1 has a NODE_PRIVATE_KEY secret, but {genesis} does not exist" in run.output
    assert run.changes() == []
    assert not genesis.exists()


def test_failed_deploy_stops_there_and_a_rerun_finishes(
    node_urls: list[str], tmp_path: Path
) -> None:
    state_dir, genesis = tmp_path / "fly", tmp_path / "genesis.json"
    urls = ",".join(node_urls)
    failed = deploy(
        state_dir, "--genesis", str(genesis), "--urls", urls, FAKE_FLY_FAIL_DEPLOY="qudag-node3"
    )
    assert failed.returncode == 1
    assert "the deploy of qudag-node3 failed; qudag-node4 not deployed" in failed.output
    assert [option(argv, "-a") for argv in failed.of("deploy")] == APPS[:3]
    apps = load_state(state_dir)["apps"]
    assert [len(apps[app]["machines"]) for app in APPS] == [1, 1, 0, 0]
    assert "final at log position" not in failed.output

    rerun = deploy(state_dir, "--genesis", str(genesis), "--urls", urls)
    assert rerun.returncode == 0, rerun.output
    assert [option(argv, "-a") for argv in rerun.of("deploy")] == APPS[2:]
    # The keys and the token were staged the first time. Whether a never deployed app's
    # QUDAG_VALIDATORS is current cannot be read back: it is staged again, the same value.
    assert [(c["argv"][-1], c["stdin_names"]) for c in imports(state_dir)[4:]] == [
        ("qudag-node3", ["QUDAG_VALIDATORS"]),
        ("qudag-node4", ["QUDAG_VALIDATORS"]),
    ]


def test_missing_region_stops_before_any_change(tmp_path: Path) -> None:
    offered = "yyz,iad,ord,ewr,lhr,syd,dfw"
    run = deploy(tmp_path / "fly", "--regions", "yyz,yul,ord,ewr", FAKE_FLY_REGIONS=offered)
    assert run.returncode == 1
    lines = run.output.splitlines()
    assert any(line.startswith("deploy.sh: Fly does not offer region yul ") for line in lines)
    heading = (
        "Regions Fly offers that this deployment does not use yet, nearest to yyz, ord, ewr first:"
    )
    assert lines[lines.index(heading) + 1 :] == [
        "  iad  Ashburn, Virginia (US)",
        "  dfw  Dallas, Texas (US)",
        "  lhr  London, United Kingdom",
        "  syd  Sydney, Australia",
        "Choose with --regions, for example: --regions yyz,iad,ord,ewr",
    ]
    assert run.calls == [["auth", "whoami"], ["platform", "regions", "--json"]]


def test_volume_in_another_region_is_an_error(tmp_path: Path) -> None:
    state_dir = tmp_path / "fly"
    state_dir.mkdir()
    fly = str(FAKE_FLY / "fly")
    for argv in (
        ["apps", "create", "qudag-node2"],
        ["volumes", "create", "dag_data", "--region", "lhr", "-a", "qudag-node2", "--yes"],
    ):
        env = {**os.environ, "FAKE_FLY_STATE": str(state_dir)}
        subprocess.run([fly, *argv], env=env, check=True, capture_output=True, timeout=60)
    run = deploy(state_dir, "--genesis", str(tmp_path / "genesis.json"))
    assert run.returncode == 1
    assert "qudag-node2 has volume dag_data in another region" in run.output
    assert "is to run in iad" in run.output
    assert [option(a, "-a") for a in run.of("volumes", "create")] == ["qudag-node1"]
    volumes = load_state(state_dir)["apps"]["qudag-node2"]["volumes"]
    assert [v["region"] for v in volumes] == ["lhr"]  # no second volume


def test_dry_run_shows_the_commands_and_changes_nothing(tmp_path: Path) -> None:
    genesis = tmp_path / "genesis.json"
    run = deploy(tmp_path / "fly", "--dry-run", "--genesis", str(genesis))
    assert run.returncode == 0, run.output
    for app, region in zip(APPS, REGIONS, strict=True):
        assert f"+ fly apps create {app}\n  (dry run: not run)" in run.output
        assert f"+ fly volumes create dag_data --region {region} --size 1" in run.output
        assert f"+ fly secrets import --stage -a {app}  (stdin: NODE_PRIVATE_KEY=<new> " in (
            run.output
        )
        assert f"-a {app} --image-label" in run.output
    assert run.output.count("+ fly deploy . --config ") == 4
    assert "Dry run: nothing was changed." in run.output
    assert run.changes() == []
    assert not genesis.exists()
    assert load_state(tmp_path / "fly")["apps"] == {}


def test_not_logged_in_says_how_to_log_in(tmp_path: Path) -> None:
    run = deploy(tmp_path / "fly", FAKE_FLY_LOGGED_OUT="1")
    assert run.returncode == 1
    assert "deploy.sh: not logged in to Fly.io: run fly auth login" in run.output
    assert run.calls == [["auth", "whoami"]]


def test_missing_flyctl_says_how_to_install_it(tmp_path: Path) -> None:
    tools = ["python3", "mktemp", "rm", "dirname", "git", "grep", "basename", "date", "cat"]
    dirs = {str(Path(shutil.which(t) or "/").parent) for t in tools}
    path = os.pathsep.join(sorted(dirs))
    if shutil.which("fly", path=path) or shutil.which("flyctl", path=path):
        pytest.skip(f"a real flyctl is installed in {path}")
    run = deploy(tmp_path / "fly", path=path)
    assert run.returncode == 1
    assert "deploy.sh: flyctl is not installed: curl -L https://fly.io/install.sh | sh" in (
        run.output
    )
    assert run.calls == []


@pytest.mark.parametrize(
    ("command", "document", "expected"),
    [
        (["secrets"], [{"Name": "PEER_AUTH_TOKEN", "Digest": "ab", "CreatedAt": "x"}], "-"),
        (["secrets"], [{"name": "PEER_AUTH_TOKEN", "digest": "ab", "status": "Staged"}], "Staged"),
    ],
)
def test_support_reads_old_and_new_flyctl_json(
    command: list[str], document: Any, expected: str
) -> None:
    result = subprocess.run(
        [sys.executable, str(SUPPORT), *command],
        input=json.dumps(document),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout == f"PEER_AUTH_TOKEN {expected}\n"


def test_support_checks_regions_in_older_flyctl_json() -> None:
    legacy = [
        {"Code": code, "Name": name, "Latitude": lat, "Longitude": lon}
        for code, name, lat, lon in [
            ("yyz", "Toronto, Canada", 43.68, -79.63),
            ("iad", "Ashburn, Virginia (US)", 39.04, -77.49),
            ("syd", "Sydney, Australia", -33.95, 151.18),
        ]
    ]
    result = subprocess.run(
        [sys.executable, str(SUPPORT), "check-regions", "yyz,yul"],
        check=False,
        input=json.dumps(legacy),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "  iad  Ashburn, Virginia (US)\n  syd  Sydney, Australia\n" in result.stderr
    assert "--regions yyz,iad" in result.stderr


def genesis_check(path: Path) -> subprocess.CompletedProcess[str]:
    """deploy_support.py's check of the genesis file at ``path`` for the four apps."""
    nodes = [f"node{i}" for i in range(1, 5)]
    return subprocess.run(
        [sys.executable, str(SUPPORT), "genesis-check", str(path), "qudag-testnet", *nodes],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("scheme", list(Scheme), ids=lambda s: s.label)
def test_support_takes_the_genesis_of_either_scheme(tmp_path: Path, scheme: Scheme) -> None:
    """A network deployed with Ed25519 keys goes on with its genesis file; a new one has
    composite keys: either way the apps get its validators whole."""
    size = 32 if scheme is Scheme.ED25519 else 64
    validators = tuple(
        Validator(f"node{i}", Signer(bytes([i]) * size).public_key) for i in range(1, 5)
    )
    path = tmp_path / "genesis.json"
    document = json.loads(genesis_to_json(Genesis("qudag-testnet", validators, scheme)))
    if scheme is Scheme.ED25519:
        del document["scheme"]  # as the script wrote it before schemes were named
    path.write_text(json.dumps(document, indent=2))
    result = genesis_check(path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == format_validator_list(validators) + "\n"


def test_support_refuses_a_genesis_key_of_another_size(tmp_path: Path) -> None:
    path = tmp_path / "genesis.json"
    keys = ["ab" * 32, "ab" * 33, "cd" * 32, "ef" * 32]
    path.write_text(
        json.dumps(
            {
                "network_id": "qudag-testnet",
                "validators": [
                    {"name": f"node{i}", "public_key": key} for i, key in enumerate(keys, 1)
                ],
            }
        )
    )
    result = genesis_check(path)
    assert result.returncode == 1
    assert result.stderr == (
        f"deploy.sh: {path}: the public key of node2 is not 64 or 3968 lowercase hex"
        " characters (an ed25519 or a mldsa65-ed25519 key)\n"
    )


def label_parts(repo: Path, validators: str, *apps: str) -> dict[str, tuple[str, str]]:
    """(validators part, build part) of the label deploy_support.py makes per APP:REGION."""
    result = subprocess.run(
        [sys.executable, str(SUPPORT), "labels", str(repo), validators, *apps],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = {}
    for line in result.stdout.splitlines():
        app, label = line.split()
        v, b = label.split("-")
        out[app] = (v, b)
    return out


def git_repo(root: Path, files: dict[str, str]) -> Path:
    """A git repository at ``root`` tracking ``files`` (path: content)."""
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "."], check=True)
    return root


def test_labels_follow_the_validators_and_the_build_inputs(tmp_path: Path) -> None:
    repo = git_repo(
        tmp_path,
        {
            "Dockerfile": "FROM x\n",
            "qudag_node/node.py": "one\n",
            "docs/deploy.md": "text\n",
            "fly/genesis.json": "{}\n",
        },
    )
    base = label_parts(repo, "node1=aa", "qudag-node1:yyz", "qudag-node2:iad")
    assert base == label_parts(repo, "node1=aa", "qudag-node1:yyz", "qudag-node2:iad")
    (v1, b1), (v2, b2) = base["qudag-node1"], base["qudag-node2"]
    assert v1 == v2  # one validator set, several apps
    assert b1 != b2
    [(v, b)] = label_parts(repo, "node1=aa", "qudag-node1:lhr").values()
    assert (v, b != b1) == (v1, True)  # another region: another build, same validators
    [(v, b)] = label_parts(repo, "node1=bb", "qudag-node1:yyz").values()
    assert (v != v1, b) == (True, b1)  # another validator set, same build
    # Docs and the genesis file are no build input: editing them redeploys nothing.
    (repo / "docs/deploy.md").write_text("more text\n")
    (repo / "fly/genesis.json").write_text('{"validators": []}\n')
    assert label_parts(repo, "node1=aa", "qudag-node1:yyz")["qudag-node1"] == (v1, b1)
    # The code is, uncommitted edits included.
    (repo / "qudag_node/node.py").write_text("two\n")
    [(v, b)] = label_parts(repo, "node1=aa", "qudag-node1:yyz").values()
    assert (v, b != b1) == (v1, True)


def test_every_file_the_dockerfile_copies_is_a_build_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file the image is built from but the label ignored would never be redeployed."""
    spec = importlib.util.spec_from_file_location("deploy_support", SUPPORT)
    assert spec is not None
    assert spec.loader is not None
    deploy_support = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "deploy_support", deploy_support)  # for its dataclasses
    spec.loader.exec_module(deploy_support)
    sources = []
    for line in (REPO / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from=") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    assert sources, "no COPY found in the Dockerfile"
    for source in sources:
        name = source.rstrip("/") + ("/" if (REPO / source).is_dir() else "")
        assert deploy_support.is_build_input(name), f"{source} is copied but not in BUILD_INPUTS"
