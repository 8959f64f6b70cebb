"""Real node processes for tests: start, find the API port in the JSON logs, stop."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

START_TIMEOUT = 30.0


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def json_records(text: str) -> list[dict[str, Any]]:
    """The JSON objects among the lines of a log (other lines are skipped)."""
    out = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


class NodeProcess:
    """One ``python -m qudag_node run`` process with its own data dir and log file."""

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        command: Sequence[str] = (sys.executable, "-m", "qudag_node", "run"),
    ) -> None:
        self.command = list(command)
        self.data_dir = data_dir
        self.log_path = log_path
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self._log_offset = 0

    @property
    def url(self) -> str:
        """Base URL of the API over IPv4 loopback."""
        assert self.port is not None, "node not started"
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready: bool = True) -> NodeProcess:
        """Start the process and wait until its API answers /ready (or, with
        ``ready=False``, /health: a node of a network waits for peers to be ready)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QUDAG_", "NODE_", "FLY_"))}
        env.update(
            {
                "QUDAG_DATA_DIR": str(self.data_dir),
                "QUDAG_API_PORT": "0",
                "QUDAG_P2P_PORT": "0",
                "QUDAG_LOG_FORMAT": "json",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_until(self._found_port, START_TIMEOUT, "the api_listening log line")
        if ready:
            wait_until(self._is_ready, START_TIMEOUT, "/ready")
        else:
            wait_until(self._is_alive, START_TIMEOUT, "/health")
        return self

    def _found_port(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"node exited with {self.proc.returncode}:\n{self.logs()}")
        for record in self.records():
            if record.get("event") == "api_listening":
                self.port = int(record["port"])
                return True
        return False

    def _is_ready(self) -> bool:
        status, _ = request("GET", self.url + "/ready")
        return status == 200

    def _is_alive(self) -> bool:
        status, _ = request("GET", self.url + "/health")
        return status == 200

    def logs(self) -> str:
        """Everything this run wrote so far."""
        with self.log_path.open("rb") as fh:
            fh.seek(self._log_offset)
            return fh.read().decode(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records of this run (non-JSON lines are skipped)."""
        return json_records(self.logs())

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; returns its exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait for the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def request(
    method: str,
    url: str,
    body: bytes | None = None,
    content_type: str = "application/octet-stream",
    timeout: float = 30.0,
) -> tuple[int, Any]:
    """One HTTP request; returns (status, decoded JSON or text). Status 0 = no answer."""
    req = urllib.request.Request(url, data=body, method=method)  # noqa: S310
    if body is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def submit_json(url: str, txs: list[bytes], wait: bool = False) -> tuple[int, Any]:
    """Submit a batch as JSON with base64 items."""
    body = json.dumps({"transactions": [base64.b64encode(t).decode() for t in txs]}).encode()
    suffix = "?wait=final" if wait else ""
    return request("POST", f"{url}/api/v1/transactions{suffix}", body, "application/json")


def metric(url: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The sum of a node's ``name`` samples whose labels include ``labels``."""
    code, text = request("GET", url + "/metrics", timeout=10)
    assert code == 200
    total = 0.0
    for line in str(text).splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in (labels or {}).items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
