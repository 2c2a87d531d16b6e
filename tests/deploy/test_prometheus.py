"""The alert rules of deploy/prometheus: `promtool check rules` accepts them, `promtool test rules` runs their
unit tests (alerts.test.yml), every `prebuildd_*` name they use is one the Metrics registry serves, and every
runbook they link is a heading of docs/operations.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from prebuildd.runtime.metrics import Metrics
from tests.support.deploy import DEPLOY, REPO, require_tool

RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
METRIC_NAME = re.compile(r"\bprebuildd_[a-z0-9_]+\b")
# The series a family of each type serves (prometheus_client names a counter's family without `_total`).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}


def _served_names() -> set[str]:
    """Every series name /metrics can serve, labelled families included (they render no sample until used)."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def _rules() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    promtool = require_tool("promtool", "the Prometheus rule checks (Debian's prometheus package)")
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_promtool_check_rules_accepts_the_rules() -> None:
    result = _promtool("check", "rules", str(RULES), cwd=RULES.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_test_rules_passes_the_unit_tests() -> None:
    result = _promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules_fails_a_rule_that_does_not_fire(tmp_path: Path) -> None:
    """The unit tests can fail: with the pool-empty threshold moved to an hour, they do."""
    broken = RULES.read_text().replace("for: 10m", "for: 1h", 1)
    assert broken != RULES.read_text()
    (tmp_path / RULES.name).write_text(broken)
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    result = _promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "PrebuilddPoolEmpty" in result.stdout + result.stderr


def test_every_metric_the_rules_use_is_served() -> None:
    served = _served_names()
    used = {name for rule in _rules() for name in METRIC_NAME.findall(str(rule["expr"]))}
    assert used, "the rules use prebuildd metrics"
    assert used <= served, f"not served by /metrics: {sorted(used - served)}"
    # The unit tests feed only real series too, so a renamed metric cannot pass them by accident.
    fed = set(METRIC_NAME.findall(RULE_TESTS.read_text()))
    assert fed <= served, f"not served by /metrics: {sorted(fed - served)}"


def test_the_name_check_catches_a_metric_that_does_not_exist() -> None:
    assert "prebuildd_daemons_alive" in _served_names()
    assert "prebuildd_daemons_running" not in _served_names()
    assert "prebuildd_task_restarts_total" in _served_names()
    assert "prebuildd_task_restarts" not in _served_names()


def test_the_issue_alerts_are_there() -> None:
    expressions = {str(rule["alert"]): " ".join(str(rule["expr"]).split()) for rule in _rules()}
    fors = {str(rule["alert"]): rule.get("for") for rule in _rules()}
    assert "prebuildd_prebuilds_eligible == 0" in expressions["PrebuilddPoolEmpty"]
    assert fors["PrebuilddPoolEmpty"] == "10m"
    assert "prebuildd_preset_hard_limited == 1" in expressions["PrebuilddPresetHardLimited"]
    assert "prebuildd_reconcile_seconds_since_success) > 300" in expressions["PrebuilddReconcileStalled"]
    assert "prebuildd_job_queue_oldest_pending_seconds > 600" in expressions["PrebuilddJobQueueBacklog"]
    assert expressions["PrebuilddDaemonsDown"] == "prebuildd_daemons_alive < prebuildd_daemons_configured"


def test_every_runbook_link_is_a_heading_of_the_operations_guide() -> None:
    guide = (REPO / "docs" / "operations.md").read_text()
    anchors = {_anchor(line.lstrip("#")) for line in guide.splitlines() if line.startswith("#")}
    for rule in _rules():
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        if "runbook" not in annotations:
            continue
        page, _, anchor = str(annotations["runbook"]).partition("#")
        assert page == "docs/operations.md"
        assert anchor in anchors, f"{rule['alert']}: no heading #{anchor} in docs/operations.md"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


SCRAPE = DEPLOY / "prometheus" / "scrape.yml"
TOKEN_FILE = "/etc/prometheus/secrets/prebuildd-metrics/token"


def test_the_scrape_job_is_valid_and_sends_the_metrics_token(tmp_path: Path) -> None:
    job = yaml.safe_load(SCRAPE.read_text())["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"] == {"type": "Bearer", "credentials_file": TOKEN_FILE}
    # promtool checks that the credentials file exists: point it at a stand-in.
    token = tmp_path / "token"
    token.write_text("stand-in\n")
    config = tmp_path / "scrape.yml"
    config.write_text(SCRAPE.read_text().replace(TOKEN_FILE, str(token)))
    result = _promtool("check", "config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    missing = tmp_path / "no-auth.yml"
    missing.write_text(SCRAPE.read_text().replace(TOKEN_FILE, str(tmp_path / "absent")))
    assert _promtool("check", "config", str(missing), cwd=tmp_path).returncode != 0
