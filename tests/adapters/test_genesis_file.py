"""Genesis files and validator lists: round trips, the hash check, every error message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qudag_node.core.crypto import Scheme, Signer
from qudag_node.core.genesis import NAME_RULE, Genesis, Validator
from qudag_node.core.types import PublicKey
from qudag_node.genesis_file import (
    GenesisFileError,
    genesis_from_json,
    genesis_to_json,
    parse_validator_list,
    validators_genesis,
)

KEYS = [PublicKey(bytes([i]) * 32) for i in (1, 2, 3)]
GENESIS = Genesis(
    "qudag-testnet",
    (Validator("node1", KEYS[0]), Validator("node2", KEYS[1]), Validator("node3", KEYS[2])),
)
COMPOSITE_KEYS = [Signer(bytes([i]) * 64).public_key for i in (1, 2, 3, 4)]
COMPOSITE = Genesis(
    "pq-net",
    tuple(Validator(f"pq{i}", key) for i, key in enumerate(COMPOSITE_KEYS, start=1)),
    Scheme.MLDSA65_ED25519,
)
SOURCE = "net/genesis.json"


def document(**changes: Any) -> dict[str, Any]:
    """The JSON document of GENESIS with some top-level fields replaced."""
    doc: dict[str, Any] = json.loads(genesis_to_json(GENESIS))
    doc.update(changes)
    return doc


def entries(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    """Validator objects from (name, key hex) pairs."""
    return [{"name": name, "public_key": key} for name, key in pairs]


def load_error(text: str) -> str:
    """The message of the error that loading ``text`` raises."""
    with pytest.raises(GenesisFileError) as info:
        genesis_from_json(text, SOURCE)
    message = str(info.value)
    assert message.startswith(f"genesis file {SOURCE}: "), message
    assert "\n" not in message
    return message.removeprefix(f"genesis file {SOURCE}: ")


def list_error(raw: str) -> str:
    """The message of the error that parsing the validator list ``raw`` raises."""
    with pytest.raises(GenesisFileError) as info:
        parse_validator_list(raw)
    assert "\n" not in str(info.value)
    return str(info.value)


# --- writing and reading -----------------------------------------------------------


def test_written_form_is_stable_and_readable() -> None:
    text = genesis_to_json(GENESIS)
    assert text == genesis_to_json(GENESIS)
    assert text.endswith("}\n")
    assert text.count("\n") > 5, "indented, one field per line"
    assert json.loads(text) == {
        "network_id": "qudag-testnet",
        "scheme": "ed25519",
        "validators": [
            {"name": "node1", "public_key": "01" * 32},
            {"name": "node2", "public_key": "02" * 32},
            {"name": "node3", "public_key": "03" * 32},
        ],
        "hash": GENESIS.hash.hex(),
    }
    assert list(json.loads(text)) == ["network_id", "scheme", "validators", "hash"]


def test_round_trip_keeps_the_genesis_and_its_order() -> None:
    loaded = genesis_from_json(genesis_to_json(GENESIS), SOURCE)
    assert loaded == GENESIS
    assert loaded.hash == GENESIS.hash
    assert loaded.encode() == GENESIS.encode()
    swapped = Genesis("qudag-testnet", (GENESIS.validators[1], GENESIS.validators[0]))
    assert genesis_from_json(genesis_to_json(swapped), SOURCE).hash == swapped.hash != GENESIS.hash


def test_hash_field_is_optional() -> None:
    doc = document()
    del doc["hash"]
    assert genesis_from_json(json.dumps(doc), SOURCE).hash == GENESIS.hash


def test_upper_case_hex_is_accepted() -> None:
    doc = document(hash=GENESIS.hash.hex().upper())
    doc["validators"][0]["public_key"] = KEYS[0].hex().upper()
    assert genesis_from_json(json.dumps(doc), SOURCE) == GENESIS


def test_edited_contents_fail_the_hash_check() -> None:
    doc = document()
    doc["validators"][2]["name"] = "node9"
    assert load_error(json.dumps(doc)) == "hash does not match its contents"
    assert load_error(json.dumps(document(network_id="qudag-other"))) == (
        "hash does not match its contents"
    )
    assert load_error(json.dumps(document(hash="00" * 32))) == "hash does not match its contents"


@pytest.mark.parametrize("value", ["abc", "zz" * 32, 7, None])
def test_malformed_hash(value: object) -> None:
    assert load_error(json.dumps(document(hash=value))) == "hash must be 64 hex characters"


# --- errors in a genesis file ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "not valid JSON: Expecting value at line 1"),
        ('{"network_id": "x",\n', "not valid JSON: Expecting property name enclosed in double"),
        ("[]", "must hold one JSON object"),
        ('"qudag"', "must hold one JSON object"),
    ],
)
def test_not_a_json_object(text: str, expected: str) -> None:
    assert load_error(text).startswith(expected)


def test_unknown_and_duplicate_fields() -> None:
    assert load_error(json.dumps(document(validator=[]))) == "unknown field 'validator'"
    text = genesis_to_json(GENESIS).replace('"network_id"', '"network_id": "a", "network_id"')
    assert load_error(text) == "field 'network_id' appears twice"
    doc = document()
    doc["validators"][1]["weight"] = 2
    assert load_error(json.dumps(doc)) == "validator 2: unknown field 'weight'"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"network_id": None}, "network_id must be a string"),
        ({"network_id": 5}, "network_id must be a string"),
        ({"network_id": "-dash"}, f"network_id must be {NAME_RULE}"),
        ({"network_id": "x" * 64}, f"network_id must be {NAME_RULE}"),
        ({"validators": []}, "validators must be a non-empty list"),
        ({"validators": {"name": "node1"}}, "validators must be a non-empty list"),
        ({"validators": ["node1"]}, "validator 1 must be an object with name and public_key"),
        ({"validators": [{"public_key": "01" * 32}]}, "validator 1: name must be a string"),
        ({"validators": [{"name": "n"}]}, "validator 1: public_key must be a string"),
        (
            {"validators": entries(("n1", "01" * 32), ("bad name", "02" * 32))},
            f"validator 2: name must be {NAME_RULE}",
        ),
        (
            {"validators": entries(("n1", "01" * 32), ("n2", "02" * 31))},
            "validator 2 (n2): a public key is 32 bytes (ed25519) or 1984 bytes (mldsa65-ed25519)",
        ),
        (
            {"validators": entries(("n1", "01" * 32), ("n2", "0x" + "02" * 31))},
            "validator 2 (n2): a public key is hex",
        ),
        (
            {"validators": entries(("n1", "01" * 32), ("n2", "02" * 32), ("n1", "03" * 32))},
            "validator 3 (n1): name already used by validator 1 (n1)",
        ),
        (
            {"validators": entries(("n1", "01" * 32), ("n2", "02" * 32), ("n3", "02" * 32))},
            "validator 3 (n3): public key already used by validator 2 (n2)",
        ),
    ],
)
def test_invalid_contents(changes: dict[str, Any], expected: str) -> None:
    doc = document(**changes)
    del doc["hash"]
    assert load_error(json.dumps(doc)) == expected


#: A file as written before schemes were named: no ``scheme`` field, and its hash.
OLD_FILE = json.dumps(
    {
        "network_id": "qudag-testnet",
        "validators": [{"name": f"node{i}", "public_key": f"{i:02x}" * 32} for i in (1, 2, 3)],
        "hash": "3da646825312cb3c38d75d0ebf8b2b469e97607c0806f1c12e87bb00d264d510",
    },
    indent=2,
)


def test_a_file_without_a_scheme_is_an_ed25519_network_with_its_old_hash() -> None:
    loaded = genesis_from_json(OLD_FILE, SOURCE)
    assert loaded == GENESIS
    assert loaded.scheme is Scheme.ED25519
    assert loaded.hash.hex() == "3da646825312cb3c38d75d0ebf8b2b469e97607c0806f1c12e87bb00d264d510"


def test_a_composite_genesis_round_trips_with_its_scheme_named() -> None:
    text = genesis_to_json(COMPOSITE)
    assert json.loads(text)["scheme"] == "mldsa65-ed25519"
    assert [len(v["public_key"]) for v in json.loads(text)["validators"]] == [3968] * 4
    loaded = genesis_from_json(text, SOURCE)
    assert (loaded, loaded.hash) == (COMPOSITE, COMPOSITE.hash)
    renamed = json.loads(text)
    renamed["validators"][0]["name"] = "pq9"
    del renamed["hash"]
    assert genesis_from_json(json.dumps(renamed), SOURCE).hash != COMPOSITE.hash


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [
        ("dilithium3", "scheme must be one of ed25519, mldsa65-ed25519"),
        ("ED25519", "scheme must be one of ed25519, mldsa65-ed25519"),
        (2, "scheme must be one of ed25519, mldsa65-ed25519"),
        (None, "scheme must be one of ed25519, mldsa65-ed25519"),
    ],
)
def test_an_unknown_scheme_is_refused(scheme: object, expected: str) -> None:
    doc = document(scheme=scheme)
    del doc["hash"]
    assert load_error(json.dumps(doc)) == expected


@pytest.mark.parametrize(
    ("scheme", "keys", "expected"),
    [
        (
            "ed25519",
            [COMPOSITE_KEYS[0], COMPOSITE_KEYS[1]],
            "validator n1: a ed25519 public key is 32 bytes",
        ),
        (
            "mldsa65-ed25519",
            [COMPOSITE_KEYS[0], KEYS[1]],
            "validator n2: a mldsa65-ed25519 public key is 1984 bytes",
        ),
        (
            "mldsa65-ed25519",
            [KEYS[0], KEYS[1]],
            "validator n1: a mldsa65-ed25519 public key is 1984 bytes",
        ),
    ],
)
def test_keys_of_another_scheme_than_the_files_are_refused(
    scheme: str, keys: list[PublicKey], expected: str
) -> None:
    doc = document(scheme=scheme, validators=entries(("n1", keys[0].hex()), ("n2", keys[1].hex())))
    del doc["hash"]
    assert load_error(json.dumps(doc)) == expected


def test_a_validator_list_of_composite_keys_names_its_scheme() -> None:
    raw = ",".join(f"{v.name}={v.public_key.hex()}" for v in COMPOSITE.validators)
    validators = parse_validator_list(raw)
    assert validators == COMPOSITE.validators
    assert validators_genesis("pq-net", validators) == COMPOSITE
    assert validators_genesis("qudag-testnet", GENESIS.validators) == GENESIS


def test_a_validator_list_mixing_key_sizes_makes_no_genesis() -> None:
    raw = f"a={KEYS[0].hex()},b={COMPOSITE_KEYS[0].hex()}"
    with pytest.raises(ValueError, match="validator b: a ed25519 public key is 32 bytes"):
        validators_genesis("mixed", parse_validator_list(raw))


def test_missing_fields() -> None:
    assert load_error("{}") == "network_id must be a string"
    assert load_error('{"network_id": "net"}') == "validators must be a non-empty list"


def test_bad_validator_name_is_not_shown() -> None:
    secret_like = "ab" * 32
    doc = document(validators=entries((secret_like, "01" * 32)))
    assert secret_like not in load_error(json.dumps(doc))


# --- validator lists ---------------------------------------------------------------


def test_validator_list_round_trip() -> None:
    raw = ",".join(f"{v.name}={v.public_key.hex()}" for v in GENESIS.validators)
    assert parse_validator_list(raw) == GENESIS.validators


def test_validator_list_separators_spaces_and_case() -> None:
    one, two, three = (k.hex() for k in KEYS)
    raw = f"\n node1 = {one.upper()} ,\n\nnode2={two}\r\n,, node3={three}\n"
    assert parse_validator_list(raw) == GENESIS.validators


@pytest.mark.parametrize("raw", ["", "  ", ",\n,"])
def test_empty_validator_list(raw: str) -> None:
    assert parse_validator_list(raw) == ()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (f"a={'01' * 32},b", "entry 2 is not NAME=PUBLIC_KEY"),
        (f"a={'01' * 32},{'02' * 32}", "entry 2 is not NAME=PUBLIC_KEY"),
        (f"={'01' * 32}", f"entry 1: name must be {NAME_RULE}"),
        (f"a b={'01' * 32}", f"entry 1: name must be {NAME_RULE}"),
        (f"{'n' * 64}={'01' * 32}", f"entry 1: name must be {NAME_RULE}"),
        ("a=", "entry 1 (a): a public key is hex"),
        (
            f"a={'01' * 33}",
            "entry 1 (a): a public key is 32 bytes (ed25519) or 1984 bytes (mldsa65-ed25519)",
        ),
        (
            f"a={'01' * 1985}",
            "entry 1 (a): a public key is 32 bytes (ed25519) or 1984 bytes (mldsa65-ed25519)",
        ),
        (f"a={'0g' * 32}", "entry 1 (a): a public key is hex"),
        (f"a={'01' * 32}=x", "entry 1 (a): a public key is hex"),
        (
            f"a={'01' * 32},b={'02' * 32},a={'03' * 32}",
            "entry 3 (a): name already used by entry 1 (a)",
        ),
        (
            f"a={'01' * 32}\nb={'02' * 32}\nc={'02' * 32}",
            "entry 3 (c): public key already used by entry 2 (b)",
        ),
        (
            f"a={'01' * 32},b={'01'.upper() * 32}",
            "entry 2 (b): public key already used by entry 1 (a)",
        ),
    ],
)
def test_bad_validator_list_entries(raw: str, expected: str) -> None:
    assert list_error(raw) == expected


def test_bad_entry_does_not_echo_key_material() -> None:
    material = "5e" * 32
    for raw in (material, f"{material}=node1", f"node1={material[:-2]}"):
        message = list_error(raw)
        assert material[:40] not in message, message


def test_errors_are_value_errors() -> None:
    assert issubclass(GenesisFileError, ValueError)
