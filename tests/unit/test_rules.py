"""The alerting rules pass `promtool check rules` and their unit tests (tests/promtool/).

promtool comes with Debian's `prometheus` package (scripts/install-system-deps.sh). Without it
these tests FAIL: an unchecked rules file must not pass as a checked one.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts/kube-l2tp/files/prometheus-rules.yaml"
RULE_TESTS = ROOT / "tests/promtool/rules-test.yaml"
# Where each alert's runbook is read: docs/runbooks/ALERT.md of the repository.
RUNBOOKS = "https://github.com/kube-l2tp/kube-l2tp/blob/main/docs/runbooks/"


def promtool(*args: str) -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail(
            "promtool not found: install Debian's prometheus package"
            " (apt-get install --no-install-recommends prometheus)",
            pytrace=False,
        )
    proc = subprocess.run(
        [exe, *args], capture_output=True, text=True, check=False, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def test_promtool_check_rules() -> None:
    assert "SUCCESS" in promtool("check", "rules", str(RULES))


def test_promtool_test_rules() -> None:
    assert "SUCCESS" in promtool("test", "rules", str(RULE_TESTS))


def test_every_alert_has_a_unit_test_and_annotations() -> None:
    import yaml

    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert set(alerts) - tested == set(), "alerts never shown to fire in rules-test.yaml"
    for name, rule in alerts.items():
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
        url = rule["annotations"]["runbook_url"]
        assert url == RUNBOOKS + f"{name}.md", name
        assert (ROOT / "docs/runbooks" / f"{name}.md").is_file(), name
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
