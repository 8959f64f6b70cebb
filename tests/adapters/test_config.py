"""Settings: precedence of the sources, validation messages, secrets, derived values."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import pytest

from qudag_node.config import (
    BY_NAME,
    PLATFORM_ENV,
    SETTINGS,
    ConfigError,
    Secret,
    Settings,
    load_settings,
)
from qudag_node.core.crypto import Scheme, Signer
from qudag_node.core.genesis import Genesis, Validator
from qudag_node.core.params import Params
from qudag_node.core.types import PublicKey
from qudag_node.genesis_file import genesis_to_json

KEY = "9f" * 32
TOKEN = "1f3e5d7c9b0a2f4e6d8c1b3a5f7e9d02c4b6a8f0e2d4c6b8a1f3e5d7c9b0a246"  # noqa: S105 - a test value

#: One invalid value per setting whose parser can reject anything.
INVALID = {
    "node_id": "bad id!",
    "network_mode": "mainnet",
    "state_sync": "sometimes",
    "backfill": "always",
    "peer_transport": "quic",
    "network_id": "-leading-dash",
    "validators": "node1=not-a-key",
    "dag_sync_interval": "0",
    "log_level": "verbose",
    "log_format": "xml",
    "node_private_key": "zz" * 32,
    "peer_auth_token": "too-short",
    "api_token": "short-token",
    "api_write_rate": "-1",
    "api_write_burst": "0",
    "api_clients": "1e3",
    "api_trust_fly_client_ip": "yes",
    "peer_auth_token_previous": "too-short",
    "api_port": "65536",
    "p2p_port": "-1",
    "peers": "no-port-here",
    "dns_servers": "dns.example:53",
    "peer_queue_bytes": "1000",
    "max_tx_bytes": "0",
    "max_body_bytes": "1023",
    "http_header_timeout": "0",
    "http_body_timeout": "601",
    "http_min_body_rate": "-1",
    "http_idle_timeout": "soon",
    "max_api_connections": "1000001",
    "stream_max_subscribers": "100001",
    "max_submit_txs": "many",
    "max_pending": "0",
    "max_vertex_txs": "1.5",
    "min_round_interval": "61",
    "heartbeat_interval": "nan",
    "leader_timeout": "0",
    "checkpoint_interval": "1",
    "wait_timeout": "inf",
    "min_free_disk_mb": "-1",
    "shutdown_timeout": "0.5",
    "retention": "12 weeks",
    "tx_retention": "0rounds",
}
#: Free-text settings: every value is accepted.
FREE_TEXT = {"data_dir", "api_host", "genesis_file"}


def write_toml(path: Path, values: dict[str, str]) -> Path:
    """A TOML file setting each key to a string value."""
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    return path


def test_invalid_table_covers_every_setting() -> None:
    missing = {s.name for s in SETTINGS} - set(INVALID) - FREE_TEXT
    assert not missing, f"give INVALID a value each of {sorted(missing)} refuses (or FREE_TEXT)"
    assert set(INVALID) | FREE_TEXT == {s.name for s in SETTINGS}
    assert not set(INVALID) & FREE_TEXT


def test_every_field_but_the_platform_is_a_setting_in_field_order() -> None:
    names = [f.name for f in fields(Settings)]
    assert [s.name for s in SETTINGS] == [n for n in names if n != "platform"]
    assert all(BY_NAME[s.name] is s for s in SETTINGS)
    assert len({s.env for s in SETTINGS}) == len(SETTINGS), "one variable per setting"


def test_defaults() -> None:
    s = load_settings({})
    for setting in SETTINGS:
        if setting.secret:
            assert getattr(s, setting.name) is None
        else:
            assert getattr(s, setting.name) == setting.parse(setting.default)
    assert s.api_port == 8080
    assert s.data_dir == "./data"
    assert s.effective_network_id == "qudag-local"


@pytest.mark.parametrize(
    ("name", "env", "values"),
    [
        ("api_port", "QUDAG_API_PORT", ("8080", "9001", "9002", "9003")),
        ("node_id", "NODE_ID", ("node1", "from-file", "from-env", "from-flag")),
        ("log_level", "LOG_LEVEL", ("info", "debug", "warning", "error")),
    ],
)
def test_precedence_default_file_env_flag(
    tmp_path: Path, name: str, env: str, values: tuple[str, str, str, str]
) -> None:
    default, in_file, in_env, in_flag = (BY_NAME[name].parse(v) for v in values)
    path = str(write_toml(tmp_path / "node.toml", {name: values[1]}))

    assert getattr(load_settings({}), name) == default
    assert getattr(load_settings({}, config_file=path), name) == in_file
    assert getattr(load_settings({env: values[2]}, config_file=path), name) == in_env
    flags: dict[str, str | None] = {name: values[3]}
    assert getattr(load_settings({env: values[2]}, flags, path), name) == in_flag
    # A flag that was not given does not override anything.
    assert getattr(load_settings({env: values[2]}, {name: None}, path), name) == in_env


def test_config_file_from_environment(tmp_path: Path) -> None:
    from_env = write_toml(tmp_path / "a.toml", {"node_id": "a"})
    from_arg = write_toml(tmp_path / "b.toml", {"node_id": "b"})
    assert load_settings({"QUDAG_CONFIG": str(from_env)}).node_id == "a"
    assert load_settings({"QUDAG_CONFIG": str(from_env)}, config_file=str(from_arg)).node_id == "b"


def test_file_numbers_and_lists(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('api_port = 9100\nleader_timeout = 1.5\npeers = ["a:7000", "b:7001"]\n')
    s = load_settings({"PEER_AUTH_TOKEN": TOKEN}, config_file=str(path))
    assert (s.api_port, s.leader_timeout, s.peers) == (9100, 1.5, ("a:7000", "b:7001"))


@pytest.mark.parametrize(
    ("name", "source"),
    [
        (name, source)
        for name in sorted(INVALID)
        for source in ("environment", "config file", "command line")
        # Secrets are refused in the file whatever their value: tested separately.
        if not (BY_NAME[name].secret and source == "config file")
    ],
)
def test_invalid_value_names_the_setting_and_the_source(
    tmp_path: Path, name: str, source: str
) -> None:
    setting = BY_NAME[name]
    value = INVALID[name]
    path = tmp_path / "node.toml"
    env, flags, config_file = {}, {}, None
    if source == "environment":
        env = {setting.env: value}
    elif source == "config file":
        config_file = str(write_toml(path, {name: value}))
    else:
        flags = {name: value}
    with pytest.raises(ConfigError) as info:
        load_settings(env, flags, config_file)
    message = str(info.value)
    assert message.startswith(f"invalid {setting.env} ")
    expected = f"config file {path}" if source == "config file" else source
    assert f"(from {expected})" in message
    assert "\n" not in message


def test_tx_limit_above_body_limit_is_an_error() -> None:
    with pytest.raises(ConfigError, match="QUDAG_MAX_TX_BYTES"):
        load_settings({"QUDAG_MAX_TX_BYTES": "4096", "QUDAG_MAX_BODY_BYTES": "2048"})


def test_a_batch_limit_above_the_pool_is_an_error() -> None:
    # A batch the pool can never hold would be answered "full, try again" for ever.
    with pytest.raises(ConfigError) as info:
        load_settings({"QUDAG_MAX_SUBMIT_TXS": "5001", "QUDAG_MAX_PENDING": "5000"})
    message = str(info.value)
    assert message.startswith("invalid QUDAG_MAX_SUBMIT_TXS: 5001 is over QUDAG_MAX_PENDING")
    assert "\n" not in message
    settings = load_settings({"QUDAG_MAX_SUBMIT_TXS": "5000", "QUDAG_MAX_PENDING": "5000"})
    assert settings.max_submit_txs == settings.max_pending == 5000


def test_abuse_control_settings() -> None:
    s = load_settings({})
    assert (s.api_write_rate, s.api_write_burst, s.api_clients) == (0.0, 100, 10000)
    assert s.api_trust_fly_client_ip is False
    assert s.api_token is None
    s = load_settings(
        {
            "QUDAG_API_WRITE_RATE": "2.5",
            "QUDAG_API_WRITE_BURST": "7",
            "QUDAG_API_CLIENTS": "64",
            "QUDAG_API_TRUST_FLY_CLIENT_IP": " True ",
            "QUDAG_API_TOKEN": "7b3f9e1d5a0c2e4f6b8d1a3c5e7f9b0d2a4c6e8f1b3d5a7c9e0f2b4d6a8c1e3f",
        }
    )
    assert (s.api_write_rate, s.api_write_burst, s.api_clients) == (2.5, 7, 64)
    assert s.api_trust_fly_client_ip is True
    assert s.api_token == Secret("7b3f9e1d5a0c2e4f6b8d1a3c5e7f9b0d2a4c6e8f1b3d5a7c9e0f2b4d6a8c1e3f")
    shown = json.dumps(s.redacted()) + repr(s)
    assert "7b3f9e1d5a0c2e4f6b8d1a3c5e7f9b0d2a4c6e8f1b3d5a7c9e0f2b4d6a8c1e3f" not in shown


def test_unknown_file_key_is_an_error(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "node.toml", {"api_prot": "8080"})
    with pytest.raises(ConfigError, match="unknown setting 'api_prot'"):
        load_settings({}, config_file=str(path))


@pytest.mark.parametrize("text", ["api_port = true\n", "[api]\nport = 1\n", "api_port = \n"])
def test_malformed_file_is_an_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"config file {path}"):
        load_settings({}, config_file=str(path))


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings({}, config_file=str(tmp_path / "absent.toml"))


@pytest.mark.parametrize(
    ("name", "value"),
    [("node_private_key", KEY), ("peer_auth_token", TOKEN), ("api_token", TOKEN)],
)
def test_secret_in_file_is_an_error(tmp_path: Path, name: str, value: str) -> None:
    path = write_toml(tmp_path / "node.toml", {name: value})
    with pytest.raises(ConfigError) as info:
        load_settings({}, config_file=str(path))
    message = str(info.value)
    assert BY_NAME[name].env in message
    assert value not in message


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("NODE_PRIVATE_KEY", "zz" + KEY[2:]),
        ("NODE_PRIVATE_KEY", KEY + "00"),
        ("PEER_AUTH_TOKEN", "short-secret"),
        ("QUDAG_API_TOKEN", "short-secret"),
    ],
)
def test_bad_secret_is_not_echoed(env: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({env: value})
    assert env in str(info.value)
    assert value not in str(info.value)
    assert value not in repr(info.value)


def test_secrets_are_wrapped_and_redacted() -> None:
    s = load_settings({"NODE_PRIVATE_KEY": KEY.upper(), "PEER_AUTH_TOKEN": TOKEN})
    assert s.node_private_key == Secret(KEY)
    assert s.peer_auth_token is not None
    assert s.peer_auth_token.reveal() == TOKEN
    shown = json.dumps(s.redacted())
    for text in (shown, repr(s), str(s)):
        assert KEY not in text.lower()
        assert TOKEN not in text
    assert s.redacted()["node_private_key"] == "<set>"
    unset = load_settings({}).redacted()
    assert {unset[x.name] for x in SETTINGS if x.secret} == {"<unset>"}
    assert set(s.redacted()) == {f.name for f in fields(Settings)}


def test_a_composite_private_key_of_128_hex_characters_is_accepted() -> None:
    key = "3c" * 64
    s = load_settings({"NODE_PRIVATE_KEY": key.upper()})
    assert s.node_private_key == Secret(key)
    assert Signer(bytes.fromhex(key)).scheme is Scheme.MLDSA65_ED25519


@pytest.mark.parametrize("length", [62, 66, 96, 126, 130, 8064])
def test_a_private_key_of_another_length_is_refused_saying_what_is_expected(
    length: int,
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"NODE_PRIVATE_KEY": "3c" * (length // 2)})
    assert str(info.value) == (
        "invalid NODE_PRIVATE_KEY (from environment): must be 64 hex characters"
        " (an Ed25519 private key) or 128 (an ML-DSA-65 + Ed25519 one);"
        " make one with: qudag-node keygen"
    )


def test_empty_secret_means_unset() -> None:
    s = load_settings({"NODE_PRIVATE_KEY": "  ", "PEER_AUTH_TOKEN": ""})
    assert s.node_private_key is None
    assert s.peer_auth_token is None


def test_peers_parsing() -> None:
    raw = " node2.internal:7000, 10.0.0.3:7001,[::1]:7000\n[fdaa::2]:7002,, "
    assert load_settings({"QUDAG_PEERS": raw, "PEER_AUTH_TOKEN": TOKEN}).peers == (
        "node2.internal:7000",
        "10.0.0.3:7001",
        "[::1]:7000",
        "[fdaa::2]:7002",
    )
    assert load_settings({"QUDAG_PEERS": ""}).peers == ()


@pytest.mark.parametrize("entry", ["host", ":7000", "host:0", "host:65536", "host:abc", "[::1]"])
def test_bad_peer_entries(entry: str) -> None:
    with pytest.raises(ConfigError, match="QUDAG_PEERS") as info:
        load_settings({"QUDAG_PEERS": f"ok:7000,{entry}", "PEER_AUTH_TOKEN": TOKEN})
    assert "(from environment)" in str(info.value)


def test_peers_need_the_peer_token() -> None:
    with pytest.raises(ConfigError, match="PEER_AUTH_TOKEN is not") as info:
        load_settings({"QUDAG_PEERS": "node2.internal:7000"})
    assert "QUDAG_PEERS" in str(info.value)


def test_dns_servers_parsing() -> None:
    raw = "127.0.0.1:5353, fdaa::3 ,[::1]:53,10.0.0.2"
    assert load_settings({"QUDAG_DNS_SERVERS": raw}).dns_servers == (
        "127.0.0.1:5353",
        "fdaa::3",
        "[::1]:53",
        "10.0.0.2",
    )
    with pytest.raises(ConfigError, match=r"QUDAG_DNS_SERVERS.*is not ip, ip:port or \[ip\]:port"):
        load_settings({"QUDAG_DNS_SERVERS": "127.0.0.1:0"})


def test_engine_params_mapping() -> None:
    s = load_settings(
        {
            "QUDAG_MAX_TX_BYTES": "1000",
            "QUDAG_MAX_VERTEX_TXS": "77",
            "QUDAG_MAX_PENDING": "555",
            "QUDAG_MAX_SUBMIT_TXS": "555",
            "QUDAG_MIN_ROUND_INTERVAL": "0.2",
            "QUDAG_HEARTBEAT_INTERVAL": "3s",
            "QUDAG_LEADER_TIMEOUT": "0.7",
            "QUDAG_CHECKPOINT_INTERVAL": "10",
        }
    )
    p = s.engine_params()
    assert isinstance(p, Params)
    assert (p.max_tx_bytes, p.max_vertex_txs, p.max_pending) == (1000, 77, 555)
    assert (p.min_round_interval, p.heartbeat_interval, p.leader_timeout) == (0.2, 3.0, 0.7)
    assert p.checkpoint_interval == 10
    assert p.max_vertex_bytes == 4 << 20


def test_network_id() -> None:
    assert load_settings({"NETWORK_MODE": "TestNet"}).effective_network_id == "qudag-testnet"
    s = load_settings({"NETWORK_MODE": "testnet", "QUDAG_NETWORK_ID": "lab-7"})
    assert s.effective_network_id == "lab-7"


def test_platform_variables_are_read_when_present() -> None:
    env = {"FLY_APP_NAME": "qudag-node1", "FLY_REGION": "yyz", "FLY_MACHINE_ID": ""}
    s = load_settings(env)
    assert s.platform == (("FLY_APP_NAME", "qudag-node1"), ("FLY_REGION", "yyz"))
    assert s.redacted()["platform"] == {"FLY_APP_NAME": "qudag-node1", "FLY_REGION": "yyz"}
    assert set(PLATFORM_ENV) >= {k for k, _ in s.platform}


# --- the network's genesis ---------------------------------------------------------

OWN_KEY = PublicKey(b"\x07" * 32)
VALIDATORS = (Validator("v1", PublicKey(b"\x01" * 32)), Validator("v2", PublicKey(b"\x02" * 32)))
VALIDATOR_LIST = ",".join(f"{v.name}={v.public_key.hex()}" for v in VALIDATORS)


def write_genesis(path: Path, genesis: Genesis) -> str:
    """Write ``genesis`` as a genesis file; returns the path as a string."""
    path.write_text(genesis_to_json(genesis))
    return str(path)


def genesis_error(env: dict[str, str]) -> str:
    """The one-line message of the error that building the genesis raises."""
    settings = load_settings(env)
    with pytest.raises(ConfigError) as info:
        settings.genesis(OWN_KEY)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_genesis_defaults_to_this_node_alone() -> None:
    s = load_settings({"NODE_ID": "solo-7", "NETWORK_MODE": "testnet"})
    genesis = s.genesis(OWN_KEY)
    assert genesis == Genesis.solo("qudag-testnet", "solo-7", OWN_KEY)
    assert genesis.hash == Genesis.solo("qudag-testnet", "solo-7", OWN_KEY).hash
    assert s.genesis(PublicKey(b"\x08" * 32)).hash != genesis.hash


def test_genesis_from_the_validator_list() -> None:
    s = load_settings({"QUDAG_VALIDATORS": VALIDATOR_LIST, "QUDAG_NETWORK_ID": "lab-7"})
    assert s.validators == VALIDATORS
    assert s.genesis(OWN_KEY) == Genesis("lab-7", VALIDATORS)
    by_mode = load_settings({"QUDAG_VALIDATORS": VALIDATOR_LIST, "NETWORK_MODE": "testnet"})
    assert by_mode.genesis(OWN_KEY) == Genesis("qudag-testnet", VALIDATORS)


def test_validator_list_in_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    items = ", ".join(json.dumps(item) for item in VALIDATOR_LIST.split(","))
    path.write_text(f"validators = [{items}]\n")
    assert load_settings({}, config_file=str(path)).validators == VALIDATORS


def test_bad_validator_list_names_the_entry() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"QUDAG_VALIDATORS": f"{VALIDATOR_LIST},v3=1234"})
    assert str(info.value) == (
        "invalid QUDAG_VALIDATORS (from environment): "
        "entry 3 (v3): a public key is 32 bytes (ed25519) or 1984 bytes (mldsa65-ed25519)"
    )


def test_genesis_from_a_file_wins_over_the_network_mode(tmp_path: Path) -> None:
    expected = Genesis("lab-net", VALIDATORS)
    path = write_genesis(tmp_path / "genesis.json", expected)
    s = load_settings({"QUDAG_GENESIS": path, "NETWORK_MODE": "testnet", "NODE_ID": "other"})
    assert s.genesis_file == path
    genesis = s.genesis(OWN_KEY)
    assert genesis == expected
    assert genesis.hash == expected.hash
    same_id = load_settings({"QUDAG_GENESIS": path, "QUDAG_NETWORK_ID": "lab-net"})
    assert same_id.genesis(OWN_KEY) == expected


def test_genesis_file_from_the_config_file_and_the_flag(tmp_path: Path) -> None:
    path = write_genesis(tmp_path / "genesis.json", Genesis("lab-net", VALIDATORS))
    toml = str(write_toml(tmp_path / "node.toml", {"genesis_file": path}))
    assert load_settings({}, config_file=toml).genesis(OWN_KEY).network_id == "lab-net"
    assert load_settings({}, {"genesis_file": path}).genesis(OWN_KEY).network_id == "lab-net"


def test_network_id_that_contradicts_the_genesis_file(tmp_path: Path) -> None:
    path = write_genesis(tmp_path / "genesis.json", Genesis("lab-net", VALIDATORS))
    message = genesis_error({"QUDAG_GENESIS": path, "QUDAG_NETWORK_ID": "other-net"})
    assert message.startswith("QUDAG_NETWORK_ID is 'other-net' but genesis file ")
    assert path in message
    assert "'lab-net'" in message


def test_genesis_file_and_validator_list_together_are_an_error(tmp_path: Path) -> None:
    path = write_genesis(tmp_path / "genesis.json", Genesis("lab-net", VALIDATORS))
    with pytest.raises(ConfigError) as info:
        load_settings({"QUDAG_GENESIS": path, "QUDAG_VALIDATORS": VALIDATOR_LIST})
    assert str(info.value) == "QUDAG_GENESIS and QUDAG_VALIDATORS are both set; use one of them"


def test_missing_genesis_file(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.json")
    message = genesis_error({"QUDAG_GENESIS": path})
    assert message == f"invalid QUDAG_GENESIS: genesis file {path}: not found"


def test_unreadable_genesis_file(tmp_path: Path) -> None:
    message = genesis_error({"QUDAG_GENESIS": str(tmp_path)})
    assert message.startswith(f"invalid QUDAG_GENESIS: genesis file {tmp_path}: ")
    assert message != f"invalid QUDAG_GENESIS: genesis file {tmp_path}: "
    binary = tmp_path / "genesis.bin"
    binary.write_bytes(b"\xff\xfe{}")
    assert genesis_error({"QUDAG_GENESIS": str(binary)}) == (
        f"invalid QUDAG_GENESIS: genesis file {binary}: not UTF-8 text"
    )


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda text: text.replace('"v2"', '"v9"'), "hash does not match its contents"),
        (lambda text: text[:-3], "not valid JSON: "),
        (lambda text: text.replace('"network_id"', '"network"'), "unknown field 'network'"),
    ],
)
def test_invalid_genesis_file(tmp_path: Path, edit: Callable[[str], str], expected: str) -> None:
    path = tmp_path / "genesis.json"
    path.write_text(edit(genesis_to_json(Genesis("lab-net", VALIDATORS))))
    message = genesis_error({"QUDAG_GENESIS": str(path)})
    assert message.startswith(f"invalid QUDAG_GENESIS: genesis file {path}: {expected}")


#: A composite network's validators (real keys, made from fixed seeds) and their list.
COMPOSITE_OWN = Signer(b"\x07" * 64)
COMPOSITE = tuple(Validator(f"c{i}", Signer(bytes([i]) * 64).public_key) for i in range(1, 5))
COMPOSITE_LIST = ",".join(f"{v.name}={v.public_key.hex()}" for v in COMPOSITE)


def test_a_composite_validator_list_makes_a_composite_genesis() -> None:
    s = load_settings({"QUDAG_VALIDATORS": COMPOSITE_LIST, "QUDAG_NETWORK_ID": "pq-net"})
    assert s.validators == COMPOSITE
    genesis = s.genesis(COMPOSITE_OWN.public_key)
    assert genesis == Genesis("pq-net", COMPOSITE, Scheme.MLDSA65_ED25519)
    assert s.key_scheme() is Scheme.MLDSA65_ED25519
    assert load_settings({"QUDAG_VALIDATORS": VALIDATOR_LIST}).key_scheme() is Scheme.ED25519


def test_a_validator_list_mixing_key_sizes_is_refused_at_start() -> None:
    mixed = f"{VALIDATOR_LIST},c1={COMPOSITE[0].public_key.hex()}"
    message = genesis_error({"QUDAG_VALIDATORS": mixed})
    assert message == "invalid genesis: validator c1: a ed25519 public key is 32 bytes"


@pytest.mark.parametrize("source", ["validators", "genesis file"])
def test_a_node_key_of_another_scheme_than_the_network_is_refused(
    tmp_path: Path, source: str
) -> None:
    composite_env = {"QUDAG_VALIDATORS": COMPOSITE_LIST}
    ed25519_env = {"QUDAG_VALIDATORS": VALIDATOR_LIST}
    if source == "genesis file":
        composite = Genesis("pq-net", COMPOSITE, Scheme.MLDSA65_ED25519)
        composite_env = {"QUDAG_GENESIS": write_genesis(tmp_path / "pq.json", composite)}
        ed25519_env = {
            "QUDAG_GENESIS": write_genesis(tmp_path / "ed.json", Genesis("ed-net", VALIDATORS))
        }
    with pytest.raises(ConfigError) as info:
        load_settings(composite_env).genesis(OWN_KEY)
    assert str(info.value) == (
        "the node key is a ed25519 key but the network signs with mldsa65-ed25519:"
        " give NODE_PRIVATE_KEY a key made with qudag-node keygen --scheme mldsa65-ed25519"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(ed25519_env).genesis(COMPOSITE_OWN.public_key)
    assert str(info.value) == (
        "the node key is a mldsa65-ed25519 key but the network signs with ed25519:"
        " give NODE_PRIVATE_KEY a key made with qudag-node keygen --scheme ed25519"
    )


def test_a_node_alone_makes_its_network_in_its_keys_scheme() -> None:
    s = load_settings({"NODE_ID": "solo-7"})
    assert s.key_scheme() is Scheme.MLDSA65_ED25519  # the default of new networks
    assert s.genesis(COMPOSITE_OWN.public_key).scheme is Scheme.MLDSA65_ED25519
    assert s.genesis(OWN_KEY).scheme is Scheme.ED25519  # an Ed25519 key keeps its network


def test_the_scheme_of_a_key_made_now_is_the_genesis_files(tmp_path: Path) -> None:
    composite = Genesis("pq-net", COMPOSITE, Scheme.MLDSA65_ED25519)
    pq = load_settings({"QUDAG_GENESIS": write_genesis(tmp_path / "pq.json", composite)})
    assert pq.key_scheme() is Scheme.MLDSA65_ED25519
    old = tmp_path / "old.json"  # a genesis file written before schemes were named
    document = json.loads(genesis_to_json(Genesis("ed-net", VALIDATORS)))
    del document["scheme"]
    old.write_text(json.dumps(document))
    ed = load_settings({"QUDAG_GENESIS": str(old)})
    assert ed.key_scheme() is Scheme.ED25519
    assert ed.genesis(OWN_KEY) == Genesis("ed-net", VALIDATORS)


def test_validators_are_shown_in_the_redacted_settings() -> None:
    shown = load_settings({"QUDAG_VALIDATORS": VALIDATOR_LIST}).redacted()
    assert json.loads(json.dumps(shown))["validators"] == [
        {"name": v.name, "public_key": v.public_key.hex()} for v in VALIDATORS
    ]
    assert load_settings({}).redacted()["validators"] == []


@pytest.mark.parametrize(
    "token",
    [
        "0f1e2d3c4b5a69788796a5b4c3d2e1f0",  # 32 hex: 128 bits
        "b3Jh5K8pQ2xZ7mN4vL1sT9",  # 22 base64: 132 bits
        "q0V3-x_Ty8Zk2mP9aL4wRc==",  # base64url with padding
        "5c0e8a2f4d6b1937e8c0a2f4d6b19375c0e8a2f4d6b1937e8c0a2f4d6b19375e",  # 64 hex
    ],
)
def test_a_peer_token_of_128_bits_or_more_is_accepted(token: str) -> None:
    settings = load_settings({"PEER_AUTH_TOKEN": token})
    assert settings.peer_auth_token == Secret(token)


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("0f1e2d3c4b5a69788796a5b4c3d2e1f", "shorter than 128 bits"),  # 31 hex: 124 bits
        ("b3Jh5K8pQ2xZ7mN4vL1sT", "shorter than 128 bits"),  # 21 base64: 126 bits
        ("too-short", "shorter than 128 bits"),
        ("x" * 64, "fewer than 8 distinct characters"),
        ("ab" * 40, "fewer than 8 distinct characters"),
        ("0123456789abcdef" * 2, "repeats one short pattern"),
        ("peer-token" * 4, "repeats one short pattern"),
    ],
)
def test_a_weak_peer_token_stops_the_start_saying_why(token: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"PEER_AUTH_TOKEN": token})
    message = str(info.value)
    assert message.startswith("invalid PEER_AUTH_TOKEN (from environment): ")
    assert why in message
    assert "openssl rand -hex 32" in message
    assert "\n" not in message
    assert token not in message


PREVIOUS = "6d4b2f0e8c6a4d2b0f9e7c5a3d1b8f6e4c2a0d9b7f5e3c1a8d6b4f2e0c9a7d5b"


def test_a_previous_token_is_accepted_beside_a_new_one_and_never_shown() -> None:
    s = load_settings({"PEER_AUTH_TOKEN": TOKEN, "PEER_AUTH_TOKEN_PREVIOUS": PREVIOUS})
    assert s.peer_auth_token_previous == Secret(PREVIOUS)
    assert s.redacted()["peer_auth_token_previous"] == "<set>"  # noqa: S105
    assert PREVIOUS not in repr(s)


@pytest.mark.parametrize("token", [None, PREVIOUS])
def test_a_previous_token_needs_another_current_one(token: str | None) -> None:
    env = {"PEER_AUTH_TOKEN_PREVIOUS": PREVIOUS}
    if token is not None:
        env["PEER_AUTH_TOKEN"] = token
    with pytest.raises(ConfigError, match="PEER_AUTH_TOKEN_PREVIOUS is set") as info:
        load_settings(env)
    assert PREVIOUS not in str(info.value)


def test_a_weak_previous_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="invalid PEER_AUTH_TOKEN_PREVIOUS"):
        load_settings({"PEER_AUTH_TOKEN": TOKEN, "PEER_AUTH_TOKEN_PREVIOUS": "x" * 64})


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("archive", "archive"),
        ("50000rounds", "50000rounds"),
        ("50_000 rounds", "50000rounds"),
        ("90s", "90s"),
        ("30m", "30m"),
        ("12h", "12h"),
        ("7d", "7d"),
        ("120m", "2h"),
    ],
)
def test_retention_forms(text: str, shown: str) -> None:
    settings = load_settings({"QUDAG_RETENTION": text})
    assert str(settings.retention) == shown
    assert settings.kept_transactions == settings.retention  # by default, the same
    assert settings.redacted()["retention"] == shown


@pytest.mark.parametrize("text", ["forever", "0m", "5", "-3h", "5rounds3", "1.5h", "3w"])
def test_retention_refuses_other_forms(text: str) -> None:
    with pytest.raises(ConfigError, match=r"QUDAG_RETENTION.*must be archive, a number of rounds"):
        load_settings({"QUDAG_RETENTION": text})


@pytest.mark.parametrize(
    ("dag", "transactions"),
    [("2h", "30m"), ("1000rounds", "999rounds"), ("archive", "7d"), ("archive", "10rounds")],
)
def test_transactions_are_never_kept_for_less_than_the_dag(dag: str, transactions: str) -> None:
    with pytest.raises(
        ConfigError, match=r"QUDAG_TX_RETENTION: .* is shorter than QUDAG_RETENTION"
    ):
        load_settings({"QUDAG_RETENTION": dag, "QUDAG_TX_RETENTION": transactions})


@pytest.mark.parametrize(
    ("dag", "transactions"),
    [("30m", "2h"), ("10rounds", "10rounds"), ("1h", "archive"), ("100rounds", "1h")],
)
def test_transactions_may_be_kept_longer(dag: str, transactions: str) -> None:
    settings = load_settings({"QUDAG_RETENTION": dag, "QUDAG_TX_RETENTION": transactions})
    assert str(settings.kept_transactions) == transactions
