"""The layering rules: import-linter contracts, an allow-list for the pure core, and no
state kept at module level in it."""

from __future__ import annotations

import ast
import dataclasses
import enum
import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest

from qudag_node.core.crypto import Scheme, VerifiedCache
from qudag_node.core.params import Params

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "qudag_node" / "core"

#: Top-level modules the core may import (besides itself): the standard library's pure
#: parts, PyNaCl and cryptography (OpenSSL's ML-DSA) for signatures, and numpy for
#: arithmetic over arrays of ids.
ALLOWED = frozenset(
    {
        "__future__", "enum", "dataclasses", "typing", "collections", "struct",
        "hashlib", "re", "math", "itertools", "functools", "bisect", "heapq", "nacl",
        "cryptography",
        "numpy", "hmac", "array",
    }
)  # fmt: skip
#: Modules that would bring I/O, clocks, randomness or concurrency into the core.
FORBIDDEN = frozenset(
    {
        "asyncio", "socket", "time", "logging", "sqlite3", "os", "random", "threading",
        "aiohttp", "aiosqlite", "structlog", "prometheus_client", "opentelemetry",
    }
)  # fmt: skip


def test_import_linter_contracts_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def imported_modules(source: str, package: str) -> list[str]:
    """Absolute names of every module ``source`` imports (``package`` resolves relative ones)."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0]
                names.append(f"{base}.{node.module}" if node.module else base)
            else:
                assert node.module is not None
                names.append(node.module)
    return names


def violations(source: str, package: str = "qudag_node.core") -> list[str]:
    """Imports outside the allow-list, and any asynchronous code."""
    bad = [
        name
        for name in imported_modules(source, package)
        if name.split(".")[0] not in ALLOWED
        and name != "qudag_node.core"
        and not name.startswith("qudag_node.core.")
    ]
    bad += [
        f"async code at line {node.lineno}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.AsyncFunctionDef | ast.Await | ast.AsyncFor | ast.AsyncWith)
    ]
    return bad


CORE_FILES = sorted(CORE.glob("*.py"))


def test_only_the_spans_module_imports_opentelemetry() -> None:
    importers = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "qudag_node").rglob("*.py")
        if any(
            name.split(".")[0] == "opentelemetry"
            for name in imported_modules(path.read_text(), "qudag_node")
        )
    }
    assert importers == {"qudag_node/tracing/spans.py"}


def test_a_node_that_does_not_trace_never_loads_opentelemetry() -> None:
    code = (
        "import sys, qudag_node.root, qudag_node.tracing as t;"
        " from qudag_node.core.params import Params;"
        " assert t.start_tracing(b'\\x01' * 32, Params(), {}) is None;"
        " print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_allow_and_forbid_lists_do_not_overlap() -> None:
    assert not ALLOWED & FORBIDDEN
    assert {p.stem for p in CORE_FILES} >= {"engine", "vertex", "codec", "crypto", "rules"}


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_modules_import_only_pure_modules(path: Path) -> None:
    source = path.read_text()
    assert violations(source) == []
    assert not FORBIDDEN & {n.split(".")[0] for n in imported_modules(source, "qudag_node.core")}


def stateful_globals(module: object) -> list[str]:
    """Module-level names of ``module`` bound to an instance of a core class that can
    change (neither an enum member nor a frozen dataclass)."""
    found = []
    for name, value in vars(module).items():
        kind = type(value)
        frozen = dataclasses.is_dataclass(kind) and kind.__dataclass_params__.frozen  # type: ignore[attr-defined]
        if kind.__module__.startswith("qudag_node.core") and not (
            isinstance(value, enum.Enum) or frozen
        ):
            found.append(name)
    return found


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_modules_keep_no_state_at_module_level(path: Path) -> None:
    # engines share a cache or a clock only when they are given one
    module = importlib.import_module(f"qudag_node.core.{path.stem}")
    assert stateful_globals(module) == []


def test_the_state_check_finds_a_shared_cache() -> None:
    module = types.ModuleType("shared")
    module.CACHE = VerifiedCache(8)  # type: ignore[attr-defined]
    module.SCHEME = Scheme.ED25519  # type: ignore[attr-defined]
    module.PARAMS = Params()  # type: ignore[attr-defined]
    assert stateful_globals(module) == ["CACHE"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import time", ["time"]),
        ("import os.path", ["os.path"]),
        ("from asyncio import sleep", ["asyncio"]),
        ("from qudag_node import config", ["qudag_node"]),
        ("from qudag_node.store import Store", ["qudag_node.store"]),
        ("from .. import ports", ["qudag_node"]),
        ("from ..node import Node", ["qudag_node.node"]),
        ("async def f() -> None:\n    pass", ["async code at line 1"]),
        ("import nacl.signing\nfrom collections.abc import Sequence", []),
        ("from . import codec\nfrom .vertex import Vertex", []),
        ("from qudag_node.core.types import TxId", []),
    ],
)
def test_the_checker_catches_violations(source: str, expected: list[str]) -> None:
    assert violations(source) == expected
