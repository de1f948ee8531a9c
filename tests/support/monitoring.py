"""The monitoring profile's checked-in files (docker/monitoring/), and the metrics its dashboard
reads: the names it may use and a reader of the names it does use.

Metric names are as the text exposition shows them, a histogram without its `_bucket`, `_sum`,
`_count` suffix (`saga_order_seconds`), a counter with its `_total` (`saga_orders_total`)."""
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# PyYAML comes with the dev requirements (schemathesis's); its type stubs do not
import yaml  # type: ignore[import-untyped, unused-ignore]

from tests.support.paths import ROOT

MONITORING_DIR = ROOT / "docker" / "monitoring"
PROMETHEUS_CONFIG = MONITORING_DIR / "prometheus.yml"
GRAFANA_PROVISIONING = MONITORING_DIR / "grafana" / "provisioning"
GRAFANA_DATASOURCES = GRAFANA_PROVISIONING / "datasources" / "prometheus.yml"
GRAFANA_PROVIDERS = GRAFANA_PROVISIONING / "dashboards" / "order-saga.yml"
GRAFANA_DASHBOARDS = MONITORING_DIR / "grafana" / "dashboards"
DASHBOARD = GRAFANA_DASHBOARDS / "order-saga.json"

# name -> its labels. GET /metrics on the API (orchestrator:8000)
API_METRICS: dict[str, frozenset[str]] = {
    "saga_orders_total": frozenset({"status", "reason"}),
    "saga_order_seconds": frozenset({"status"}),
    "saga_step_seconds": frozenset({"step", "outcome"}),
    "saga_step_retries_total": frozenset({"step"}),
    "saga_compensations_total": frozenset({"step"}),
    "saga_orders_needing_attention": frozenset(),
    "saga_outbox_owed": frozenset(),
    "saga_dead_letters": frozenset({"service"}),
    "saga_queue_depth": frozenset({"queue"}),
    # prometheus-fastapi-instrumentator's defaults
    "http_request_duration_seconds": frozenset({"handler", "method"}),
    "http_requests_total": frozenset({"handler", "method", "status"}),
}
# GET /metrics on every worker process, on its WORKER_METRICS_PORT
WORKER_METRICS: dict[str, frozenset[str]] = {
    "saga_worker_task_seconds": frozenset({"task", "outcome"}),
    "saga_worker_messages_received_total": frozenset({"task"}),
    "saga_worker_retries_total": frozenset({"task"}),
    "saga_worker_connection_losses_total": frozenset(),
}
METRIC_LABELS: dict[str, frozenset[str]] = {**API_METRICS, **WORKER_METRICS}
# every metric the dashboard reads, and nothing else: tests/integration/test_monitoring_config.py
DASHBOARD_METRICS: frozenset[str] = frozenset(METRIC_LABELS)

# an identifier of ours in a PromQL expression, not part of a longer one (`exported_saga_x`)
_METRIC = re.compile(r"(?<![A-Za-z0-9_:])((?:saga|http)_[a-z0-9_]+)")
_SERIES_SUFFIX = re.compile(r"_(?:bucket|sum|count)$")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside a collapsed row too (the row itself is not one)."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def exprs(dashboard: dict[str, Any]) -> Iterator[str]:
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if "expr" in target:
                yield str(target["expr"])


def metric_names(expr: str) -> set[str]:
    """The metric names of ours a PromQL expression reads (histogram series by their family)."""
    return {_SERIES_SUFFIX.sub("", name) for name in _METRIC.findall(expr)}


def metric_names_in_dashboard(path: Path = DASHBOARD) -> set[str]:
    """Every metric name a Grafana dashboard's queries read."""
    return {name for expr in exprs(load_dashboard(path)) for name in metric_names(expr)}


def served_metric_names(exposition: str) -> set[str]:
    """The metric names a /metrics page declares, in the form above: a family counts with no
    sample yet (a labelled counter nothing has incremented), and the parser's counter family
    `saga_compensations` is `saga_compensations_total`, the name PromQL reads."""
    from prometheus_client.parser import text_string_to_metric_families
    names = set()
    for family in text_string_to_metric_families(exposition):
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names
