"""The explorer page in a real headless Chromium, against a real network of four
validator processes: it shows within 2 s the vertices and log entries that the API
reports, and the browser logs no error.

Needs Debian's ``chromium`` and ``chromium-driver`` (driven by Selenium); without them
the test skips and says so (or fails, under ``QUDAG_REQUIRE_TOOLS``). With
``QUDAG_SCREENSHOT=<path>`` it also keeps load on the network until the charts have a
minute of data and saves a screenshot of the page there (``docs/explorer.png`` is one).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.network import Load, Member, Network, network
from tests.nodeproc import request, submit_json, wait_until
from tests.tools import require_tool

#: How long the page may take to show what the API reports.
SHOWN_WITHIN = 2.0
#: Samples (2 s apart) the charts hold before a screenshot: a minute of data.
SCREENSHOT_SAMPLES = 30


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    """Headless Chromium (Debian's, through its chromedriver), keeping the console log."""
    chromium = require_tool("chromium")
    driver_path = require_tool("chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-dev-shm-usage",
        "--window-size=1400,1100",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def api(member: Member, path: str) -> Any:
    code, body = request("GET", member.url + path, timeout=10)
    assert code == 200, (path, code, body)
    return body


def page_vertices(driver: webdriver.Chrome) -> set[str]:
    ids = driver.execute_script(
        "return [...document.querySelectorAll('[data-vertex]')].map(e => e.dataset.vertex)"
    )
    return set(ids)


def page_log(driver: webdriver.Chrome) -> dict[int, str]:
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#log tr[data-seq]')]"
        ".map(r => [Number(r.dataset.seq), r.dataset.tx])"
    )
    return {int(seq): str(tx) for seq, tx in rows}


def shown_within(condition: Any, what: str) -> None:
    wait_until(condition, SHOWN_WITHIN, f"the page to show {what}")


def test_the_page_shows_what_the_api_reports_live_without_console_errors(
    tmp_path: Path, browser: webdriver.Chrome
) -> None:
    with network(tmp_path) as net:
        for name in net.validators:
            net.start(name, ready=False)
        wait_until(lambda: all(net.is_ready(n) for n in net.validators), 60, "all ready")
        node = net.members["v1"]
        code, body = submit_json(node.url, [f"before {k}".encode() for k in range(10)], wait=True)
        assert code == 200, body
        before = set(body["ids"])

        browser.get(node.url + "/explorer")
        opened = time.monotonic()

        # The DAG: every vertex drawn is one the API reports, and the newest rounds are there.
        def dag_shown() -> bool:
            drawn = page_vertices(browser)
            held = {v["id"] for v in api(node, "/api/v1/dag?rounds=50")["vertices"]}
            return bool(drawn) and drawn <= held

        shown_within(dag_shown, "vertices the API reports")
        drawn = page_vertices(browser)
        reported = api(node, "/api/v1/dag?rounds=16")
        assert drawn & {v["id"] for v in reported["vertices"]}
        # Committed leaders: ringed on the page as the API reports them, each the
        # scheduled leader of an even round, ordered.
        window = api(node, "/api/v1/dag?rounds=50")
        leaders = set(window["committed_leaders"])
        assert leaders
        ringed = browser.execute_script(
            "return [...document.querySelectorAll('[data-leader=committed]')]"
            ".map(e => e.dataset.vertex)"
        )
        assert ringed
        assert set(ringed) <= leaders
        order = [v["node_id"] for v in api(node, "/api/v1/status")["network"]["validators"]]
        for vertex in window["vertices"]:
            if vertex["id"] in leaders:
                assert vertex["round"] % 2 == 0
                assert vertex["ordered"]
                assert vertex["author"] == order[vertex["round"] // 2 % len(order)]

        # The log's tail, read from the store through the stream: the same entries as the API.
        shown_within(lambda: before <= set(page_log(browser).values()), "the log's tail")
        rows = page_log(browser)
        first = min(rows)
        entries = api(node, f"/api/v1/log?from={first}&limit={len(rows)}")["entries"]
        assert rows == {e["seq"]: e["tx_id"] for e in entries}

        # Then live: a transaction made final now arrives within 2 s.
        code, body = submit_json(node.url, [b"after the page opened"], wait=True)
        assert code == 200, body
        [after] = body["ids"]
        shown_within(lambda: after in page_log(browser).values(), "a new entry live")
        carrier = api(node, f"/api/v1/transactions/{after}")["vertex"]
        shown_within(lambda: carrier in page_vertices(browser), "the new entry's vertex")
        assert time.monotonic() - opened < 30

        # Peers: the three others, connected.
        shown_within(
            lambda: (
                browser.execute_script(
                    "return document.querySelectorAll('#peers tr[data-state=connected]').length"
                )
                == 3
            ),
            "three connected peers",
        )

        screenshot = os.environ.get("QUDAG_SCREENSHOT")
        if screenshot:
            keep_busy_and_capture(net, browser, Path(screenshot))

        assert console_errors(browser) == []


def console_errors(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """The errors in the browser's console: scripts, refused loads, the policy's refusals."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [e for e in entries if e["level"] == "SEVERE"]


def keep_busy_and_capture(net: Network, browser: webdriver.Chrome, path: Path) -> None:
    """Load on every validator until the charts hold a minute of samples, then the
    screenshot."""
    members = [net.members[n] for n in net.validators]
    with Load(lambda: members, threads=4, batch=20, pause=0.2) as load:
        wait_until(
            lambda: browser.execute_script("return state.samples.length") >= SCREENSHOT_SAMPLES,
            SCREENSHOT_SAMPLES * 3,
            "a minute of chart samples",
        )
    assert load.result.errors == []
    browser.execute_script("window.scrollTo(0, 0)")
    path.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(path))
