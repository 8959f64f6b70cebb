"""monitoring/: the scrape configurations, alert rules and dashboard work with the real node.

promtool validates the Prometheus files and runs the alert unit tests
(monitoring/alerts_test.yml). A real node process proves the storage gauges and that
every series the alerts and the dashboard use is one the node exports, so a renamed or
misspelled metric fails here instead of leaving a silent alert or an empty panel.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from qudag_node.core.sync import CATCHUP_THRESHOLD
from qudag_node.metrics import Metrics
from qudag_node.store import DB_FILENAME
from tests.nodeproc import NodeProcess, request, submit_json, wait_until
from tests.tools import require_tool

pytestmark = pytest.mark.xdist_group("monitoring")

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
DASHBOARD = MONITORING / "grafana" / "qudag-testnet.json"
#: Series that Prometheus makes itself for every target, not exported by the node.
PROMETHEUS_SERIES = frozenset({"up"})
#: Samples a histogram family exposes besides its ``# TYPE`` name.
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
#: PromQL words that are never metric names: operators, modifiers, literals.
PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan"}
)
#: Discovery of static targets is immediate, but promtool waits out its whole timeout.
DISCOVERY = ("check", "service-discovery", "--timeout=3s")
#: Other processes may write to the same disk while a test reads its free space.
FREE_SPACE_SLACK = 256 << 20

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_IDENTIFIER = re.compile(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\()?")
_LABEL_VALUES = re.compile(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*(\w+)\s*\)")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana panel query) selects.

    Label values (strings), Grafana variables, matchers (``{...}``), ranges (``[...]``)
    and label lists (``by (...)``, ``on (...)``, ...) are removed first; of the
    identifiers left, those followed by ``(`` are functions or aggregations, and the
    keywords are operators. Numbers and durations (``5m``, ``1e3``) are not identifiers.
    """
    assert "__name__" not in expr, "selecting a metric by __name__ is not supported here"
    text = _STRING.sub('""', expr)
    text = _GRAFANA_VARIABLE.sub("0", text)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = _LABEL_LIST.sub(" ", text)
    return {
        match[1]
        for match in _IDENTIFIER.finditer(text)
        if match[2] is None and match[1] not in PROMQL_KEYWORDS
    }


def unexported(names: set[str], exported: set[str]) -> set[str]:
    """The names that are neither exported by the node nor made by Prometheus."""
    return names - exported - PROMETHEUS_SERIES


def exported_names(exposition: str) -> set[str]:
    """Every series name in a ``/metrics`` text: each ``# TYPE`` name (a family with no
    samples still has one), a histogram's suffixed names, and every sample's name."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names.update(name + suffix for suffix in HISTOGRAM_SUFFIXES)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of monitoring/alerts.yml."""
    document = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard document."""
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    panels = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def dashboard_queries() -> list[str]:
    """Every panel target's PromQL expression."""
    return [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]


def variable_queries() -> list[str]:
    """The queries of the dashboard's query variables (``label_values(metric, label)``)."""
    variables = dashboard()["templating"]["list"]
    return [v["definition"] for v in variables if v["type"] == "query"]


def run_promtool(*args: str, cwd: Path = MONITORING) -> str:
    """Run promtool; fail the test with its output unless it succeeds."""
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


# ------------------------------------------------------------------ promtool


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-fly.yml"])
def test_scrape_config_is_valid(config: str) -> None:
    output = run_promtool("check", "config", config)
    assert f"SUCCESS: {config} is valid prometheus config file syntax" in output
    assert "SUCCESS: 1 rule files found" in output


def test_compose_scrape_config_labels_each_node() -> None:
    targets = json.loads(run_promtool(*DISCOVERY, "prometheus.yml", "qudag"))
    labels = sorted((t["labels"]["node"], t["labels"]["__address__"]) for t in targets)
    assert labels == [(f"node{i}", f"node{i}:8080") for i in range(1, 5)]
    assert {t["labels"]["__scrape_interval__"] for t in targets} == {"15s"}


def test_fly_scrape_config_finds_the_four_apps_and_labels_them(tmp_path: Path) -> None:
    config = yaml.safe_load((MONITORING / "prometheus-fly.yml").read_text())
    [job] = config["scrape_configs"]
    [dns] = job.pop("dns_sd_configs")
    assert dns["type"] == "AAAA"
    assert dns["names"] == [f"qudag-node{i}.internal" for i in range(1, 5)]
    # What DNS discovery yields for each name, fed through the same relabelling.
    job["static_configs"] = [
        {"targets": [f"[fdaa::{i}]:{dns['port']}"], "labels": {"__meta_dns_name": name}}
        for i, name in enumerate(dns["names"], start=1)
    ]
    resolved = tmp_path / "prometheus.yml"
    resolved.write_text(yaml.safe_dump({"global": config["global"], "scrape_configs": [job]}))
    output = run_promtool(*DISCOVERY, str(resolved), "qudag", cwd=tmp_path)
    labels = sorted((t["labels"]["node"], t["labels"]["instance"]) for t in json.loads(output))
    assert labels == [(f"node{i}", f"[fdaa::{i}]:8080") for i in range(1, 5)]


def test_alert_rules_are_valid() -> None:
    output = run_promtool("check", "rules", "alerts.yml")
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_alert_unit_tests_pass() -> None:
    output = run_promtool("test", "rules", "alerts_test.yml")
    assert "SUCCESS" in output


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not() -> None:
    document = yaml.safe_load((MONITORING / "alerts_test.yml").read_text())
    checks = [check for test in document["tests"] for check in test["alert_rule_test"]]
    for name in {rule["alert"] for rule in alert_rules()}:
        outcomes = {bool(c["exp_alerts"]) for c in checks if c["alertname"] == name}
        assert outcomes == {True, False}, f"{name}: tested firing and not firing"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool parses the dashboard's queries as recording rules, with Grafana's
    # variables replaced by what Grafana would put there.
    values = {"$__rate_interval": "1m", "$node": ".*"}
    rules = []
    for i, query in enumerate(dashboard_queries()):
        expr = query
        for variable, value in values.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query{i}", "expr": expr})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    output = run_promtool("check", "rules", str(path), cwd=tmp_path)
    assert f"SUCCESS: {len(rules)} rules found" in output


# ------------------------------------------------------------- rules and dashboard


def test_every_alert_names_its_node_and_severity() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert "{{ $labels.node }}" in rule["annotations"]["summary"], rule["alert"]
        assert "{{ $labels.node }}" in rule["annotations"]["description"], rule["alert"]


def test_catchup_alert_uses_the_nodes_catchup_threshold() -> None:
    [rule] = [r for r in alert_rules() if r["alert"] == "QudagCatchupGap"]
    assert rule["expr"] == f"qudag_catchup_gap_rounds > {CATCHUP_THRESHOLD}"


def test_dashboard_is_an_importable_templated_document() -> None:
    document = dashboard()
    panels = dashboard_panels()
    assert document["uid"] == "qudag-testnet"
    assert document["schemaVersion"] >= 36
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["node"]["definition"] == "label_values(qudag_round, node)"
    assert variables["node"]["allValue"] == ".*"  # also matches series without `node`
    data_source = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == data_source, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == data_source, panel["title"]
            assert 'node=~"$node"' in target["expr"], panel["title"]


def test_dashboard_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard_panels():
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        for x in range(box["x"], box["x"] + box["w"]):
            for y in range(box["y"], box["y"] + box["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


# ---------------------------------------------------------------- the extractor


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            "histogram_quantile(0.95, sum by (node, le) (rate("
            'qudag_finality_seconds_bucket{node=~"$node", route="/a{b}"}[$__rate_interval])))',
            {"qudag_finality_seconds_bucket"},
        ),
        ("qudag_committed_round <= qudag_committed_round offset 5m", {"qudag_committed_round"}),
        (
            'qudag_peers_connected == 0 and on (job) count by (job) (up{job="qudag"}) > 1',
            {"qudag_peers_connected", "up"},
        ),
        (
            "max_over_time(up[1h]) unless on(job, node) up",
            {"up"},
        ),
        (
            "sum without (reason) (a_total) / ignoring(x) group_left(y) b:rate5m * 1e3 > bool inf",
            {"a_total", "b:rate5m"},
        ),
        ("100 * free / size < 0.1", {"free", "size"}),
        ("sum(rate(x[5m:1m])) by (node)", {"x"}),
        ("topk(${count}, y) * $scale", {"y"}),
    ],
)
def test_metric_names_finds_exactly_the_selected_metrics(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_a_misspelled_metric_is_reported() -> None:
    exported = {"qudag_transactions_finalized_total", "qudag_round"}
    expr = 'rate(qudag_transactions_finalised_total{node=~"$node"}[5m]) and qudag_round'
    assert unexported(metric_names(expr), exported) == {"qudag_transactions_finalised_total"}
    assert unexported(metric_names("up == 0"), exported) == set()


def test_exported_names_include_families_without_samples() -> None:
    text = (
        "# HELP a_total A.\n# TYPE a_total counter\n"
        "# HELP h_seconds H.\n# TYPE h_seconds histogram\n"
        'g{x="1"} 2.0\n'
    )
    assert exported_names(text) == {
        "a_total",
        "h_seconds",
        "h_seconds_bucket",
        "h_seconds_sum",
        "h_seconds_count",
        "g",
    }


def test_storage_families_exist_before_paths_are_known(tmp_path: Path) -> None:
    metrics = Metrics("0")
    names = {f.name for f in metrics.registry.collect()}
    assert {"qudag_data_disk_free_bytes", "qudag_data_disk_size_bytes"} <= names
    assert metrics.registry.get_sample_value("qudag_data_disk_free_bytes") is None
    metrics.watch_storage(tmp_path / "gone", tmp_path / "gone" / DB_FILENAME)
    free = metrics.registry.get_sample_value("qudag_data_disk_free_bytes")
    assert free is not None
    assert math.isnan(free)
    assert metrics.registry.get_sample_value("qudag_database_bytes") == 0


# ------------------------------------------------------------ a real node


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One real node process, shared by this module's tests."""
    root = tmp_path_factory.mktemp("monitoring")
    process = NodeProcess(root / "data", root / "node.log").start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.logs()


def scrape(node: NodeProcess) -> str:
    """The node's /metrics text."""
    code, text = request("GET", node.url + "/metrics", timeout=10)
    assert code == 200, text
    return str(text)


def unlabelled_values(exposition: str) -> dict[str, float]:
    """The value of every sample without labels, by sample name."""
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if not sample.labels
    }


def test_storage_gauges_match_the_data_disk(node: NodeProcess) -> None:
    before = shutil.disk_usage(node.data_dir)
    values = unlabelled_values(scrape(node))
    after = shutil.disk_usage(node.data_dir)
    assert values["qudag_data_disk_size_bytes"] == before.total == after.total
    free = values["qudag_data_disk_free_bytes"]
    low, high = sorted((before.free, after.free))
    assert low - FREE_SPACE_SLACK <= free <= high + FREE_SPACE_SLACK


def test_database_gauge_is_the_database_file_and_its_log(node: NodeProcess) -> None:
    transactions = [os.urandom(4096) for _ in range(64)]
    code, body = submit_json(node.url, transactions, wait=True)
    assert code == 200, body
    database = node.data_dir / DB_FILENAME
    wal = database.with_name(DB_FILENAME + "-wal")

    def reported_equals_files() -> bool:
        reported = unlabelled_values(scrape(node))["qudag_database_bytes"]
        return reported == database.stat().st_size + wal.stat().st_size

    wait_until(reported_equals_files, 10, "qudag_database_bytes = size of qudag.db + its WAL")
    assert wal.stat().st_size > 0  # so the log is counted, not only the main file
    reported = unlabelled_values(scrape(node))["qudag_database_bytes"]
    assert reported >= sum(len(t) for t in transactions)


def test_every_series_in_alerts_and_dashboard_is_exported(node: NodeProcess) -> None:
    scrape(node)  # so the second scrape also holds /metrics's own request series
    exported = exported_names(scrape(node))
    uses = {f"alert {r['alert']}": metric_names(r["expr"]) for r in alert_rules()}
    uses |= {f"dashboard query {q}": metric_names(q) for q in dashboard_queries()}
    for query in variable_queries():
        match = _LABEL_VALUES.fullmatch(query)
        assert match is not None, query
        uses[f"dashboard variable {query}"] = {match[1]}
    used = set().union(*uses.values())
    assert len(used) > 20  # the extractor found the series, not nothing
    missing = {where: unexported(names, exported) for where, names in uses.items()}
    assert {where: names for where, names in missing.items() if names} == {}
