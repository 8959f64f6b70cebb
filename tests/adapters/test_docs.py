"""The operator docs stay in step with the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import Metric

from qudag_node.cli import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from qudag_node.config import PLATFORM_ENV, SETTINGS, Setting, flag_name
from qudag_node.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()
README = (ROOT / "README.md").read_text()
CONTRIBUTING = (ROOT / "CONTRIBUTING.md").read_text()


def table_row(setting: Setting) -> str:
    """The row of the settings table that starts with the setting's variable."""
    rows = [line for line in CONFIGURATION.splitlines() if line.startswith(f"| `{setting.env}` |")]
    assert len(rows) == 1, f"{setting.env}: expected one row in docs/configuration.md"
    return rows[0]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_every_setting_has_its_row(setting: Setting) -> None:
    cells = [c.strip() for c in table_row(setting).strip("|").split("|")]
    env, key, flag, default, meaning = cells
    assert env == f"`{setting.env}`"
    if setting.secret:
        assert "secret" in key
        assert "secret" in flag
        assert "environment only" in meaning.lower()
    else:
        assert key == f"`{setting.name}`"
        assert flag == f"`{flag_name(setting)}`"
    assert default == (f"`{setting.default}`" if setting.default else "(empty)")


def test_every_variable_and_flag_is_documented() -> None:
    for s in SETTINGS:
        assert s.env in CONFIGURATION
        if not s.secret:
            assert flag_name(s) in CONFIGURATION
    for name in PLATFORM_ENV:
        assert f"`{name}`" in CONFIGURATION
    assert "QUDAG_CONFIG" in CONFIGURATION
    assert "node.key" in CONFIGURATION
    assert "0600" in CONFIGURATION


def test_settings_table_has_no_stale_rows() -> None:
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", CONFIGURATION, re.MULTILINE))
    assert documented - set(PLATFORM_ENV) == {s.env for s in SETTINGS}


def test_quick_start_is_make_run_and_make_test() -> None:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1
    assert blocks[0].splitlines() == ["make run", "make test"]


def test_readme_names_every_subcommand_and_exit_code() -> None:
    for name in ("run", "keygen", "genesis", "testnet", "status", "submit", "backup", "restore"):
        assert f"qudag-node {name}" in README
    section = README.split("## Exit codes", 1)[1]
    for code in (EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED):
        assert f"\n| {code} |" in section


def test_every_metric_is_documented_and_every_documented_metric_exists() -> None:
    def exposed(family: Metric) -> str:
        return f"{family.name}_total" if family.type == "counter" else family.name

    names = {exposed(f) for f in Metrics("0").registry.collect()}
    text = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `((?:qudag|python_gc)_[a-z_]+)` \|", text, re.MULTILINE))
    assert documented == names


DEPLOY = (ROOT / "docs" / "deploy.md").read_text()


def test_deploy_doc_names_only_files_that_exist() -> None:
    named = re.findall(r"`((?:[\w.-]+/)+[\w.-]+\.(?:py|sh|toml|yml|md|json|lock))`", DEPLOY)
    named += ["Dockerfile", ".dockerignore", "requirements.lock", "docker-compose.yml"]
    for name in named:
        if "<" in name or name.startswith(("qudag-node", "fly/genesis")):
            continue  # placeholders, and the file the deploy writes
        assert (ROOT / name).exists(), f"docs/deploy.md names {name}, which does not exist"


def test_deploy_doc_uses_only_options_the_script_has() -> None:
    script = (ROOT / "scripts" / "deploy.sh").read_text()
    used = set(re.findall(r"scripts/deploy\.sh((?: --[a-z-]+(?: [\w,.-]+)?)*)", DEPLOY))
    options = {word for group in used for word in group.split() if word.startswith("--")}
    assert options, "no scripts/deploy.sh command found in docs/deploy.md"
    for option in options:
        assert f"  {option}" in script, f"docs/deploy.md uses {option}, deploy.sh has none"


def test_deploy_doc_gives_the_generated_regions() -> None:
    regions = [
        re.search(
            r'^primary_region = "(\w+)"', (ROOT / "fly" / f"qudag-node{k}.toml").read_text(), re.M
        )
        for k in range(1, 5)
    ]
    codes = ",".join(m.group(1) for m in regions if m)
    assert f"default {codes}" in (ROOT / "scripts" / "deploy.sh").read_text()
    assert f"`{codes}`" in DEPLOY


#: Marks a line of CONTRIBUTING.md naming a file that the code's layout may still
#: move or create; once the marker goes, the files on that line must exist.
PENDING_LAYOUT = "TODO(structure)"
_REPO_PATH = re.compile(r"[\w.-]+(?:/[\w.-]+)+|[\w.-]+\.(?:md|py|toml|yml|json|lock)|Makefile")


def test_contributing_names_only_files_that_exist() -> None:
    named = set()
    for line in CONTRIBUTING.splitlines():
        words = [w for span in re.findall(r"`([^`]+)`", line) for w in span.split()]
        for word in words:
            path = word.rstrip(".,;:")
            if not _REPO_PATH.fullmatch(path) or path.startswith((".venv/", "./", "http")):
                continue
            named.add(path)
            if PENDING_LAYOUT not in line:
                assert (ROOT / path).exists(), f"CONTRIBUTING.md names {path}: no such file"
    guides = ("route", "wire message", "metric", "setting", "schema migration")
    for guide in guides:
        assert f"\n## Add a {guide}\n" in CONTRIBUTING
    assert {"qudag_node/config.py", "qudag_node/store.py", "docs/metrics.md"} <= named
