"""The committed Fly configs (fly/qudag-nodeN.toml): what fly/generate.py makes, today's
fly.toml schema with the values the node needs, and an environment the node accepts."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from qudag_node.config import SETTINGS, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
FLY_DIR = REPO / "fly"
GENERATOR = FLY_DIR / "generate.py"
DEFAULT_REGIONS = ["yyz", "iad", "ord", "ewr"]
APPS = [f"qudag-node{i}" for i in range(1, 5)]
SECRET_NAMES = {"NODE_PRIVATE_KEY", "PEER_AUTH_TOKEN", "QUDAG_API_TOKEN", "QUDAG_VALIDATORS"}
#: Test values for the secrets that deploy.sh stages next to the [env] of each app.
STAGED = {
    "NODE_PRIVATE_KEY": "11" * 32,
    "QUDAG_API_TOKEN": "3a5c7e9f1b0d2f4a6c8e1f3b5d7a9c0e2f4b6d8a1c3e5f7b9d0a2c4e6f8b1d35",
    "PEER_AUTH_TOKEN": "e4c2a0f8d6b41937e5c3a1f9d7b50e2c4a6f8d1b3e5c7a9f0b2d4e6c8a1f3d57",
    "QUDAG_VALIDATORS": ",".join(f"node{i}={f'{i:02x}' * 32}" for i in range(1, 5)),
}


def generate(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the generator as an operator does."""
    return subprocess.run(
        [sys.executable, str(GENERATOR), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def load(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def seconds(duration: str) -> float:
    """A Fly duration such as "15s" or "1m", in seconds."""
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match[1]) * (60 if match[2] == "m" else 1)


def dockerfile_of(path: Path) -> Path:
    """The Dockerfile a config names, resolved as flyctl does: relative to the config."""
    return (path.parent / str(load(path)["build"]["dockerfile"])).resolve()


def node_settings(config: dict[str, Any]) -> Settings:
    """The node's settings from the app's [env] plus its staged secrets."""
    return load_settings({**config["env"], **STAGED})


def test_committed_configs_are_what_the_generator_makes(tmp_path: Path) -> None:
    result = generate("--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert [line.split()[:3] for line in result.stdout.splitlines()] == [
        [app, f"node{i}", region]
        for i, (app, region) in enumerate(zip(APPS, DEFAULT_REGIONS, strict=True), 1)
    ]
    for app in APPS:
        fresh, committed = tmp_path / f"{app}.toml", FLY_DIR / f"{app}.toml"
        # The Dockerfile path is relative to each file's directory: the same file from both.
        assert dockerfile_of(fresh) == dockerfile_of(committed) == REPO / "Dockerfile"

        def without_dockerfile(path: Path) -> list[str]:
            lines = path.read_text(encoding="utf-8").splitlines()
            return [line for line in lines if not line.strip().startswith("dockerfile =")]

        assert without_dockerfile(fresh) == without_dockerfile(committed), (
            f"fly/{app}.toml is out of date: run python3 fly/generate.py"
        )
    assert sorted(p.name for p in FLY_DIR.glob("qudag-node*.toml")) == [f"{a}.toml" for a in APPS]


@pytest.mark.parametrize("index", range(4))
def test_config_has_the_settings_of_the_design(index: int) -> None:
    app, region = APPS[index], DEFAULT_REGIONS[index]
    path = FLY_DIR / f"{app}.toml"
    config = load(path)
    settings = node_settings(config)

    assert config["app"] == app
    assert config["primary_region"] == region
    assert config["kill_signal"] == "SIGTERM"
    assert settings.shutdown_timeout < config["kill_timeout"] <= 300
    assert dockerfile_of(path) == REPO / "Dockerfile"
    assert config["deploy"] == {"strategy": "rolling"}  # canary/bluegreen forbid volumes

    assert config["env"] == {
        "NODE_ID": f"node{index + 1}",
        "NETWORK_MODE": "testnet",
        "DAG_SYNC_INTERVAL": "30",
        "LOG_LEVEL": "info",
        "QUDAG_LOG_FORMAT": "json",
        "QUDAG_DATA_DIR": "/data",
        "QUDAG_API_PORT": "8080",
        "QUDAG_P2P_PORT": "7000",
        "QUDAG_PEER_TRANSPORT": "tls",
        "QUDAG_PEERS": config["env"]["QUDAG_PEERS"],
        "QUDAG_API_WRITE_RATE": "20",
        "QUDAG_API_WRITE_BURST": "200",
        "QUDAG_API_TRUST_FLY_CLIENT_IP": "true",
        "QUDAG_RETENTION": "8000rounds",
    }
    assert settings.effective_network_id == "qudag-testnet"
    assert settings.peer_transport == "tls"

    assert config["mounts"] == {
        "source": "dag_data",
        "destination": settings.data_dir,
        "snapshot_retention": config["mounts"]["snapshot_retention"],
        "initial_size": "1gb",
        "auto_extend_size_threshold": 80,
        "auto_extend_size_increment": "1GB",
        "auto_extend_size_limit": "10GB",
    }
    assert 1 <= config["mounts"]["snapshot_retention"] <= 60

    assert config["http_service"] == {
        "internal_port": settings.api_port,
        "force_https": True,
        "auto_stop_machines": "off",
        "auto_start_machines": False,
        "min_machines_running": 1,
    }
    assert "services" not in config  # the peer port has no public service: 6PN only

    health = config["checks"]["health"]
    assert {k: health[k] for k in ("type", "port", "method", "path")} == {
        "type": "http",
        "port": settings.api_port,
        "method": "get",
        "path": "/health",
    }
    assert seconds(health["timeout"]) < seconds(health["interval"]) <= 60
    assert seconds(health["grace_period"]) >= 10
    assert list(config["checks"]) == ["health"]

    assert config["metrics"] == {"port": settings.api_port, "path": "/metrics"}
    assert config["vm"] == [{"size": "shared-cpu-1x", "memory": "256mb"}]
    assert config["restart"] == [{"policy": "on-failure", "retries": 10}]
    assert set(config) == {
        "app",
        "primary_region",
        "kill_signal",
        "kill_timeout",
        "build",
        "deploy",
        "env",
        "mounts",
        "http_service",
        "checks",
        "metrics",
        "vm",
        "restart",
    }


@pytest.mark.parametrize("index", range(4))
def test_a_public_node_limits_writes_per_client_behind_the_proxy(index: int) -> None:
    settings = node_settings(load(FLY_DIR / f"{APPS[index]}.toml"))
    # Behind Fly's proxy every connection comes from the proxy: only its header tells
    # one client from another.
    assert settings.api_trust_fly_client_ip is True
    assert 0 < settings.api_write_rate <= 100
    assert settings.api_write_burst >= settings.api_write_rate
    assert settings.api_clients >= 1000
    # the staged token makes writes need it
    assert settings.api_token is not None
    assert settings.api_token.reveal() == STAGED["QUDAG_API_TOKEN"]


def test_each_app_peers_with_exactly_the_other_three() -> None:
    configs = {app: load(FLY_DIR / f"{app}.toml") for app in APPS}
    for app, config in configs.items():
        settings = node_settings(config)
        expected = {
            f"{other}.internal:{node_settings(configs[other]).p2p_port}"
            for other in APPS
            if other != app
        }
        assert len(settings.peers) == 3
        assert set(settings.peers) == expected


def test_regions_are_distinct_and_offered_today() -> None:
    regions = [load(FLY_DIR / f"{app}.toml")["primary_region"] for app in APPS]
    assert regions == DEFAULT_REGIONS
    assert len(set(regions)) == 4
    assert "yul" not in regions  # withdrawn by Fly on 2025-10-16


def test_configs_hold_no_secret() -> None:
    secret_envs = {s.env for s in SETTINGS if s.secret} | SECRET_NAMES
    for app in APPS:
        text = (FLY_DIR / f"{app}.toml").read_text(encoding="utf-8")
        assert not secret_envs & set(load(FLY_DIR / f"{app}.toml")["env"])
        assert not re.search(r"[0-9a-fA-F]{32}", text)  # no key, token or hash of any kind


def test_generator_writes_other_regions_anywhere(tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "configs"
    result = generate("--regions", "lhr,ams,fra,cdg", "--out", str(out))
    assert result.returncode == 0, result.stderr
    for app, region in zip(APPS, ["lhr", "ams", "fra", "cdg"], strict=True):
        path = out / f"{app}.toml"
        assert f"{app} node{app[-1]} {region} {path}" in result.stdout.splitlines()
        assert load(path)["primary_region"] == region
        assert dockerfile_of(path) == REPO / "Dockerfile"  # from wherever the file is
        assert "${" not in path.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("regions", "message"),
    [
        ("yyz,iad,ord", "give 4 regions"),
        ("yyz,iad,ord,ewr,lhr", "give 4 regions"),
        ("yyz,yyz,ord,ewr", "the regions must differ"),
        ("yyz,IAD,ord,ewr", "'IAD' is not a region code"),
    ],
)
def test_generator_refuses_regions_that_cannot_work(
    tmp_path: Path, regions: str, message: str
) -> None:
    result = generate("--regions", regions, "--out", str(tmp_path))
    assert result.returncode == 2
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []
