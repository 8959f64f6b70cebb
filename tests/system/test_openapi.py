"""The published OpenAPI description: checked against the real router both ways, served
as kept in the package, and fuzzed by schemathesis against a real node process."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from qudag_node import __version__
from qudag_node.api import make_app, openapi_document
from qudag_node.config import PLATFORM_ENV, load_settings
from qudag_node.metrics import Metrics
from qudag_node.stream import Broadcaster
from tests.adapters.fakenode import FakeNode
from tests.conftest import NodeFactory
from tests.nodeproc import NodeProcess, metric, request

pytestmark = pytest.mark.xdist_group("openapi")

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT_PATH = ROOT / "qudag_node" / "openapi.json"
DOCUMENT: dict[str, Any] = json.loads(DOCUMENT_PATH.read_text())
OPENAPI_URL = "/api/v1/openapi.json"
#: Methods an OpenAPI path item can describe, upper-case as aiohttp names them.
HTTP_METHODS = ("GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE")
#: Hypothesis examples per operation in the fuzz run (besides schemathesis's explicit
#: examples and boundary cases): the bound that keeps the run well under a minute.
FUZZ_EXAMPLES = 50
#: Requests the whole fuzz run may send: a guard on that bound (a run sends about 470).
MAX_FUZZ_REQUESTS = 1500
#: What the fuzz run holds every answer to, besides "no 5xx" (see the test).
FUZZ_CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    unsupported_method,
    allow_header_conformance,
]


def documented_operations() -> set[tuple[str, str]]:
    """(METHOD, path template) of every operation in the document."""
    return {
        (method.upper(), path)
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method.upper() in HTTP_METHODS
    }


def refs(value: Any) -> Iterator[str]:
    """Every ``$ref`` inside ``value``."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "$ref":
                yield inner
            else:
                yield from refs(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from refs(inner)


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"] == "3.1.0"
    assert DOCUMENT["info"]["version"] == __version__
    schemathesis.openapi.from_dict(DOCUMENT).validate()
    for ref in set(refs(DOCUMENT)):
        assert ref.startswith("#/"), ref
        target: Any = DOCUMENT
        for part in ref[2:].split("/"):
            assert part in target, f"{ref} points nowhere"
            target = target[part]
    ids = [op["operationId"] for path in DOCUMENT["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids)), "operationIds must be unique"


def test_the_document_in_the_package_is_the_file_in_the_repository() -> None:
    assert openapi_document() == DOCUMENT_PATH.read_bytes()


def test_every_error_answer_is_the_envelope_with_its_codes() -> None:
    error_statuses = set()
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) < 400 or path in {"/health", "/ready"}:
                    continue  # /health and /ready answer 503 with their own document
                error_statuses.add(int(status))
                name = response["$ref"].rsplit("/", 1)[1]
                media = DOCUMENT["components"]["responses"][name]["content"]["application/json"]
                first = media["schema"]["allOf"][0]
                assert first == {"$ref": "#/components/schemas/Error"}, (method, path, status)
    assert error_statuses == {400, 401, 404, 408, 410, 413, 415, 429, 503, 504, 507}
    responses = DOCUMENT["components"]["responses"]
    for name in ("RateLimited", "PoolFull"):
        assert responses[name]["headers"]["Retry-After"] == {
            "$ref": "#/components/headers/RetryAfter"
        }
    assert "Allow" in responses["MethodNotAllowed"]["headers"]
    status = DOCUMENT["components"]["schemas"]["Status"]["properties"]["node"]
    assert status["properties"]["platform"]["propertyNames"]["enum"] == list(PLATFORM_ENV)


def test_the_documented_limits_are_the_default_settings() -> None:
    defaults = load_settings({})
    batch = DOCUMENT["components"]["schemas"]["SubmitBatch"]["properties"]["transactions"]
    assert batch["maxItems"] == defaults.max_submit_txs
    text = json.dumps(DOCUMENT)
    for figure in (defaults.max_submit_txs, defaults.max_tx_bytes):
        assert f"{figure:,}" in text
    assert f"{defaults.max_body_bytes >> 20} MiB" in text
    assert f"{defaults.wait_timeout:g} s" in text


def test_the_router_serves_exactly_the_documented_operations() -> None:
    metrics = Metrics(__version__)
    app = make_app(FakeNode(), metrics, load_settings({}), Broadcaster(metrics, 1, log_length=0))
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}
    gets = {path for method, path in served if method == "GET"}
    heads = {path for method, path in served if method == "HEAD"}
    assert heads == gets, "aiohttp answers HEAD for every GET, as the document says"
    assert {op for op in served if op[0] != "HEAD"} == documented_operations()


async def test_the_node_serves_the_file_and_refuses_undocumented_methods(
    node_factory: NodeFactory,
) -> None:
    handle = await node_factory()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.get(handle.url + OPENAPI_URL) as response:
            assert response.status == 200
            assert response.content_type == "application/json"
            assert await response.read() == DOCUMENT_PATH.read_bytes()
        for path, item in DOCUMENT["paths"].items():
            url = handle.url + path.replace("{id}", "0" * 64).replace("{number}", "1")
            documented = {m.upper() for m in item}
            for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
                if method in documented:
                    continue
                async with session.request(method, url) as response:
                    body = await response.json()
                    assert response.status == 405, (method, path, body)
                    assert body["error"]["code"] == "method_not_allowed"
                    assert set(response.headers["Allow"].split(",")) >= documented


async def test_the_submit_examples_are_what_a_node_answers(node_factory: NodeFactory) -> None:
    handle = await node_factory()
    post = DOCUMENT["paths"]["/api/v1/transactions"]["post"]
    batch = post["requestBody"]["content"]["application/json"]["example"]
    one = post["requestBody"]["content"]["application/octet-stream"]["example"]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.post(handle.url + "/api/v1/transactions", json=batch) as response:
            assert response.status == 202
            assert (
                await response.json()
                == post["responses"]["202"]["content"]["application/json"]["example"]
            )
        headers = {"Content-Type": "application/octet-stream"}
        url = handle.url + "/api/v1/transactions"
        async with session.post(url, data=one.encode(), headers=headers) as response:
            assert response.status == 202
        bad = {"transactions": [batch["transactions"][0], "not base64!"]}
        async with session.post(url, json=bad) as response:
            assert response.status == 400
            example = DOCUMENT["components"]["responses"]["BadSubmit"]["content"][
                "application/json"
            ]["example"]
            body = await response.json()
            assert body["error"]["code"] == example["error"]["code"]  # messages may change


# --- schemathesis against a real node process ------------------------------------------

#: The stream never ends: it is tested on its own (tests/adapters/test_stream.py).
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT).exclude(path="/api/v1/stream")


@pytest.fixture(scope="module")
def fuzzed_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node process for the whole fuzz run; ``wait=final`` waits 2 s at most.

    At the end, the node's own count agrees: no 5xx but 504 ``timeout``, within the bound.
    """
    path = tmp_path_factory.mktemp("fuzz")
    node = NodeProcess(path / "data", path / "node.log", {"QUDAG_WAIT_TIMEOUT": "2"}).start()
    yield node
    served = metric(node.url, "qudag_http_requests_total")
    code, text = request("GET", node.url + "/metrics")
    assert code == 200
    server_errors = {
        m["status"]: float(m["value"])
        for m in re.finditer(
            r'^qudag_http_requests_total\{[^}]*status="(?P<status>5\d\d)"[^}]*\} '
            r"(?P<value>\S+)$",
            str(text),
            re.MULTILINE,
        )
        if m["status"] != "504"
    }
    assert not server_errors
    assert node.stop() == 0
    assert 0 < served <= MAX_FUZZ_REQUESTS
    assert "internal_error" not in node.logs()


@SCHEMA.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_schemathesis_finds_no_server_error_and_no_answer_off_the_document(
    case: schemathesis.Case[Any], fuzzed_node: NodeProcess
) -> None:
    response = case.call(base_url=fuzzed_node.url, timeout=10)
    if response.status_code >= 500:
        # The one 5xx by design: wait=final whose timeout passed (the transactions are
        # stored; the client chose how long to wait). Anything else is a server error.
        waited = case.method == "POST" and (case.query or {}).get("wait") == "final"
        assert waited, response.status_code
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "timeout"
    case.validate_response(response, checks=FUZZ_CHECKS)
