"""The monitoring profile (docker compose --profile monitoring up), checked offline from the
checked-in files: docker/monitoring/prometheus.yml scrapes compose services on the ports they
serve metrics on, Grafana's provisioning points at that Prometheus and at the directory compose
mounts, and the dashboard is valid Grafana JSON that reads only metrics the services export
(tests/support/monitoring.py names them). docker-compose.yml is read as the real Compose binary
parses it (tests/support/compose.py, the `services` fixture), every profile on."""
import json
import re
from itertools import combinations
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.compose import WORKERS, parsed_config, seconds
from tests.support.monitoring import (
    DASHBOARD,
    DASHBOARD_METRICS,
    GRAFANA_DASHBOARDS,
    GRAFANA_DATASOURCES,
    GRAFANA_PROVIDERS,
    GRAFANA_PROVISIONING,
    METRIC_LABELS,
    PROMETHEUS_CONFIG,
    exprs,
    load_dashboard,
    load_yaml,
    metric_names,
    metric_names_in_dashboard,
    panels,
    served_metric_names,
)

MONITORING = "monitoring"
GRID_WIDTH = 24                                  # Grafana's grid is 24 columns wide
PANEL_TYPES = {"timeseries", "stat"}
# the labels Prometheus gives every scraped series (the job's, and our relabelling's)
TARGET_LABELS = {"job", "instance", "compose_service"}
# where each service is told to serve the metrics Prometheus scrapes
PORT_SETTINGS = ("API_PORT", "WORKER_METRICS_PORT")

# The keys Prometheus accepts where we use them (it refuses a config with an unknown key, so a
# typo such as `dns_sd_config` would keep it from starting)
GLOBAL_KEYS = {"scrape_interval", "scrape_timeout", "evaluation_interval", "external_labels",
               "query_log_file", "scrape_protocols"}
SCRAPE_KEYS = {"job_name", "scrape_interval", "scrape_timeout", "metrics_path", "scheme",
               "honor_labels", "honor_timestamps", "params", "static_configs", "dns_sd_configs",
               "relabel_configs", "metric_relabel_configs", "sample_limit", "scrape_protocols"}
DNS_SD_KEYS = {"names", "type", "port", "refresh_interval"}
STATIC_KEYS = {"targets", "labels"}
RELABEL_KEYS = {"source_labels", "separator", "regex", "modulus", "target_label",
                "replacement", "action"}
DURATION = re.compile(r"(\d+(ms|s|m|h|d))+")


# -- helpers --------------------------------------------------------------------------------

def prometheus_config() -> dict[str, Any]:
    config = load_yaml(PROMETHEUS_CONFIG)
    assert isinstance(config, dict), "prometheus.yml is not a mapping"
    return config


def scrape_targets(config: dict[str, Any]) -> list[tuple[str, str, int, str]]:
    """(job, host, port, how) for every target: `static` or `dns` (each replica of a service)."""
    found = []
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = str(target).rpartition(":")
                found.append((job["job_name"], host, int(port), "static"))
        for sd in job.get("dns_sd_configs", []):
            found += [(job["job_name"], name, int(sd["port"]), "dns") for name in sd["names"]]
    return found


def exposed_ports(svc: dict[str, Any]) -> set[int]:
    """The ports a service's containers open to the compose network (`expose`, `ports`)."""
    return ({int(str(port).split("/")[0]) for port in svc.get("expose") or []} |
            {int(port["target"]) for port in svc.get("ports") or []})


def host_path(svc: dict[str, Any], container_path: str) -> Path | None:
    """The checked-in file or directory a container sees at `container_path` (a bind mount)."""
    best: tuple[str, Path] | None = None
    for volume in svc.get("volumes") or []:
        target = volume["target"].rstrip("/")
        if volume["type"] != "bind":
            continue
        if (container_path == target or container_path.startswith(target + "/")) and (
                best is None or len(target) > len(best[0])):
            best = (target, Path(volume["source"]) / container_path[len(target):].lstrip("/"))
    return best[1] if best else None


def bind_mount(svc: dict[str, Any], source: Path) -> dict[str, Any]:
    mounts = [v for v in svc.get("volumes") or []
              if v["type"] == "bind" and Path(v["source"]) == source]
    assert len(mounts) == 1, f"{source} is not mounted once: {mounts}"
    mount: dict[str, Any] = mounts[0]
    return mount


def runs_with_monitoring(svc: dict[str, Any]) -> bool:
    """True when `docker compose --profile monitoring up` starts the service."""
    return not svc.get("profiles") or MONITORING in svc["profiles"]


def flag(command: list[str], name: str) -> str | None:
    for arg in command:
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


def grouping_labels(expr: str) -> list[set[str]]:
    """The labels of each `by (...)` in a PromQL expression."""
    return [{label.strip() for label in group.split(",") if label.strip()}
            for group in re.findall(r"\bby\s*\(([^)]*)\)", expr)]


def overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and
            a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])


def datasource_uid() -> str:
    (datasource,) = load_yaml(GRAFANA_DATASOURCES)["datasources"]
    return str(datasource["uid"])


# -- Prometheus ---------------------------------------------------------------------------------

def test_the_prometheus_config_has_the_structure_prometheus_accepts() -> None:
    config = prometheus_config()
    assert set(config) <= {"global", "scrape_configs"}, set(config)
    assert set(config["global"]) <= GLOBAL_KEYS, set(config["global"])
    interval, timeout = config["global"]["scrape_interval"], config["global"]["scrape_timeout"]
    for duration in (interval, timeout):
        assert DURATION.fullmatch(duration), duration
    assert seconds(timeout) <= seconds(interval), "Prometheus refuses a timeout > the interval"
    assert seconds(interval) <= 15, "a demo's dashboard should move within seconds"

    jobs = config["scrape_configs"]
    assert isinstance(jobs, list) and jobs
    names = [job["job_name"] for job in jobs]
    assert len(names) == len(set(names)), f"job names repeat: {names}"
    for job in jobs:
        assert set(job) <= SCRAPE_KEYS, (job["job_name"], set(job) - SCRAPE_KEYS)
        assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]
        assert job.get("scheme", "http") == "http", job["job_name"]
        assert job.get("static_configs") or job.get("dns_sd_configs"), job["job_name"]
        for static in job.get("static_configs", []):
            assert set(static) <= STATIC_KEYS and static["targets"], static
            for target in static["targets"]:
                assert re.fullmatch(r"[a-z][a-z0-9-]*:\d+", str(target)), target
        for sd in job.get("dns_sd_configs", []):
            assert set(sd) <= DNS_SD_KEYS, sd
            # A records (compose's DNS has no SRV records), so the port must be given
            assert sd["type"] == "A" and isinstance(sd["port"], int), sd
            assert sd["names"] and all(isinstance(n, str) for n in sd["names"]), sd
            assert DURATION.fullmatch(sd.get("refresh_interval", "30s")), sd
        for relabel in job.get("relabel_configs", []):
            assert set(relabel) <= RELABEL_KEYS, relabel
            assert relabel.get("action", "replace") == "replace", relabel


def test_every_scrape_target_is_a_compose_service_on_the_port_it_serves_metrics_on(
        services: dict[str, dict[str, Any]]) -> None:
    targets = scrape_targets(prometheus_config())
    assert targets
    for job, host, port, _how in targets:
        assert host in services, f"{job}: {host} is no compose service"
        svc = services[host]
        assert runs_with_monitoring(svc), f"{job}: {host} does not run with the profile"
        assert port in exposed_ports(svc), (
            f"{job}: {host}:{port}, but {host} opens {sorted(exposed_ports(svc))}")
        env = svc.get("environment") or {}
        told = {key: int(env[key]) for key in PORT_SETTINGS if key in env}
        assert port in told.values(), f"{job}: {host}:{port}, but its settings say {told}"

    scraped = {(host, port, how) for _job, host, port, how in targets}
    api_port = int(services["orchestrator"]["environment"]["API_PORT"])
    assert ("orchestrator", api_port, "static") in scraped
    # every worker, and every replica of it: a static `inventory:9100` would be one replica
    # picked afresh by Docker's DNS at each scrape, their series mixed into one
    workers = {name for name, svc in services.items()
               if "WORKER_METRICS_PORT" in (svc.get("environment") or {})}
    assert workers == set(WORKERS)
    for name in workers:
        port = int(services[name]["environment"]["WORKER_METRICS_PORT"])
        assert (name, port, "dns") in scraped, f"{name}'s replicas are not all scraped"
        assert not any(host == name and how == "static" for host, _, how in scraped), name


def test_the_workers_metrics_stay_on_the_compose_network(
        services: dict[str, dict[str, Any]]) -> None:
    for name in WORKERS:
        svc = services[name]
        port = svc["environment"]["WORKER_METRICS_PORT"]
        assert svc.get("expose") == [port], name
        assert not svc.get("ports"), f"{name}: a published port collides between replicas"


def test_target_labels_leave_the_metrics_own_labels_alone() -> None:
    """A target label wins over a scraped label of the same name (which becomes exported_*):
    `service` would hide saga_dead_letters{service}."""
    config = prometheus_config()
    added = {"job", "instance"}
    for job in config["scrape_configs"]:
        added |= {label for static in job.get("static_configs", [])
                  for label in static.get("labels", {})}
        added |= {relabel["target_label"] for relabel in job.get("relabel_configs", [])
                  if not relabel["target_label"].startswith("__")}
    assert added == TARGET_LABELS
    metric_labels = set().union(*METRIC_LABELS.values())
    assert not added & metric_labels, added & metric_labels
    # every target is labelled with its compose service, under the same label in every job
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            hosts = {str(target).rpartition(":")[0] for target in static["targets"]}
            assert hosts == {static.get("labels", {}).get("compose_service")}, static
        if job.get("dns_sd_configs"):
            assert any(r["target_label"] == "compose_service" and
                       r["source_labels"] == ["__meta_dns_name"]
                       for r in job.get("relabel_configs", [])), job["job_name"]


def test_prometheus_runs_the_checked_in_config(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == [MONITORING]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prometheus["image"]), \
        "pin an exact release: the dashboard's PromQL runs on it"
    command = prometheus["command"]
    config_path = flag(command, "config.file")
    assert config_path and host_path(prometheus, config_path) == PROMETHEUS_CONFIG
    assert bind_mount(prometheus, PROMETHEUS_CONFIG)["read_only"] is True
    storage = flag(command, "storage.tsdb.path")
    assert any(v["type"] == "volume" and v["target"] == storage
               for v in prometheus["volumes"]), "the samples would go with the container"
    # it listens on :9090 (no --web.listen-address) and is published there
    assert flag(command, "web.listen-address") is None
    assert exposed_ports(prometheus) == {9090}
    assert "127.0.0.1:9090" in " ".join(prometheus["healthcheck"]["test"])


# -- Grafana -----------------------------------------------------------------------------------

def test_grafana_s_datasource_is_that_prometheus_by_a_fixed_uid(
        services: dict[str, dict[str, Any]]) -> None:
    provisioning = load_yaml(GRAFANA_DATASOURCES)
    assert provisioning["apiVersion"] == 1
    (datasource,) = provisioning["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["uid"] == "prometheus"
    assert datasource["access"] == "proxy"   # Grafana's server is on the compose network
    assert datasource["isDefault"] is True
    url = urlsplit(datasource["url"])
    assert url.hostname in services, url
    assert runs_with_monitoring(services[url.hostname])
    assert services[url.hostname]["image"].startswith("prom/prometheus:")
    assert url.port in exposed_ports(services[url.hostname])
    # $__rate_interval counts in scrape intervals: Grafana must know Prometheus's
    interval = prometheus_config()["global"]["scrape_interval"]
    assert seconds(datasource["jsonData"]["timeInterval"]) == seconds(interval)


def test_grafana_loads_the_dashboard_from_where_compose_mounts_it(
        services: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    grafana = services["grafana"]
    assert grafana["profiles"] == [MONITORING]
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", grafana["image"]), \
        "pin an exact release: the dashboard JSON's schema follows it"
    # the image reads its provisioning from /etc/grafana/provisioning (GF_PATHS_PROVISIONING)
    env = grafana.get("environment") or {}
    provisioning_dir = env.get("GF_PATHS_PROVISIONING", "/etc/grafana/provisioning")
    assert host_path(grafana, provisioning_dir) == GRAFANA_PROVISIONING
    for source in (GRAFANA_PROVISIONING, GRAFANA_DASHBOARDS):
        assert bind_mount(grafana, source)["read_only"] is True
    assert host_path(grafana, f"{provisioning_dir}/datasources/{GRAFANA_DATASOURCES.name}") \
        == GRAFANA_DATASOURCES

    providers = load_yaml(GRAFANA_PROVIDERS)
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    assert host_path(grafana, path) == GRAFANA_DASHBOARDS, \
        f"the provider reads {path}, which compose does not mount from {GRAFANA_DASHBOARDS}"
    assert DASHBOARD.is_file() and DASHBOARD.parent == GRAFANA_DASHBOARDS
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path(grafana, home) == DASHBOARD

    # read-only for visitors; the admin's password comes from .env, and reaches only Grafana
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    env_file = tmp_path / ".env"
    env_file.write_text("GRAFANA_ADMIN_PASSWORD=s3cr3t-Gr\n")
    configured = parsed_config(env_file)["services"]
    assert configured["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "s3cr3t-Gr"
    assert [name for name, svc in configured.items() if "s3cr3t-Gr" in str(svc)] == ["grafana"]
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"


# -- the dashboard ------------------------------------------------------------------------------

def test_the_dashboard_is_valid_grafana_json_on_the_provisioned_datasource() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "order-saga" and dashboard["title"]
    assert dashboard["schemaVersion"] >= 39
    assert dashboard.get("id") is None, "a provisioned dashboard gets its id from Grafana"
    uid = datasource_uid()
    found = list(panels(dashboard))
    assert len(found) >= 11
    ids = [panel["id"] for panel in found]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {ids}"
    titles = [panel["title"] for panel in found]
    assert len(titles) == len(set(titles)) and all(titles), titles
    for panel in found:
        assert panel["type"] in PANEL_TYPES, (panel["title"], panel["type"])
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], f"{panel['title']} queries nothing"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), (panel["title"], refs)
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"]) == panel["datasource"]
            assert str(target.get("expr", "")).strip(), panel["title"]
        assert "defaults" in panel["fieldConfig"], panel["title"]


def test_every_panel_has_a_place_on_the_grid_and_none_overlap() -> None:
    found = list(panels(load_dashboard()))
    for panel in found:
        pos = panel["gridPos"]
        assert set(pos) == {"x", "y", "w", "h"}, panel["title"]
        assert all(isinstance(pos[k], int) for k in pos), panel["title"]
        assert pos["x"] >= 0 and pos["y"] >= 0 and pos["w"] >= 1 and pos["h"] >= 1, pos
        assert pos["x"] + pos["w"] <= GRID_WIDTH, (panel["title"], pos)
    for a, b in combinations(found, 2):
        assert not overlap(a["gridPos"], b["gridPos"]), (a["title"], b["title"])


def test_the_dashboard_reads_exactly_the_metrics_the_services_export() -> None:
    used = metric_names_in_dashboard(DASHBOARD)
    assert used - DASHBOARD_METRICS == set(), f"no service exports {used - DASHBOARD_METRICS}"
    assert DASHBOARD_METRICS - used == set(), f"not shown: {DASHBOARD_METRICS - used}"


def test_every_query_is_well_formed_promql_for_its_metrics() -> None:
    for expr in exprs(load_dashboard()):
        # brackets balance and nest
        stack: list[str] = []
        for char in expr:
            if char in "([{":
                stack.append(char)
            elif char in ")]}":
                assert stack and "([{"[")]}".index(char)] == stack.pop(), expr
        assert not stack, expr
        names = metric_names(expr)
        # ours, or Prometheus's own `up` (1 per target it reached at the last scrape)
        assert names or re.search(r"\(up\)", expr), f"reads none of our metrics: {expr}"
        # a counter is only ever read as a rate or an increase over a range
        for counter in (n for n in names if n.endswith("_total")):
            for at in (m.start() for m in re.finditer(rf"\b{counter}\b", expr)):
                assert re.search(r"\b(rate|increase)\(\s*$", expr[:at]), expr
                assert re.match(rf"{counter}(\{{[^}}]*\}})?\[[^\]]+\]", expr[at:]), expr
        # a histogram is read through its buckets, quantiles aggregated by `le`
        for name in names:
            if name.endswith("_seconds"):
                assert re.search(rf"\b{name}_(bucket|sum|count)\b", expr), expr
        if "histogram_quantile" in expr:
            assert re.search(r"histogram_quantile\(\s*0?\.\d+\s*,", expr), expr
            assert any("le" in group for group in grouping_labels(expr)), expr
        # every `by` label is one the series have
        labels = set().union(*(METRIC_LABELS[n] for n in names if n in METRIC_LABELS))
        for group in grouping_labels(expr):
            assert group <= labels | TARGET_LABELS | {"le"}, (expr, group - labels)


# (a panel's metric, the labels it must break it down by)
ASKED_FOR = [
    ("saga_orders_total", {"status", "reason"}),   # orders by outcome
    ("saga_step_seconds", {"step"}),               # step latency by step
    ("saga_queue_depth", {"queue"}),
    ("saga_step_retries_total", {"step"}),
    ("saga_compensations_total", {"step"}),
    ("saga_dead_letters", {"service"}),
    ("saga_worker_task_seconds", {"task"}),
    ("http_request_duration_seconds", {"handler"}),
]


@pytest.mark.parametrize(("metric", "by"), ASKED_FOR, ids=[m for m, _ in ASKED_FOR])
def test_the_dashboard_breaks_each_metric_down_as_asked(metric: str, by: set[str]) -> None:
    groupings = [group for expr in exprs(load_dashboard()) if metric in metric_names(expr)
                 for group in grouping_labels(expr)]
    assert any(by <= group for group in groupings), (metric, groupings)


def test_order_latency_shows_p50_p95_and_p99() -> None:
    quantiles = {float(q) for expr in exprs(load_dashboard())
                 if "saga_order_seconds_bucket" in expr
                 for q in re.findall(r"histogram_quantile\(\s*([0-9.]+)", expr)}
    assert quantiles >= {0.5, 0.95, 0.99}, quantiles


# -- the helpers themselves -----------------------------------------------------------------

def test_metric_names_in_dashboard_reads_every_query_of_every_panel(tmp_path: Path) -> None:
    dashboard = tmp_path / "d.json"
    dashboard.write_text(json.dumps({"panels": [
        {"type": "timeseries", "targets": [
            {"expr": "histogram_quantile(0.9, sum by (le) "
                     "(rate(saga_step_seconds_bucket[$__rate_interval])))"},
            {"expr": 'sum(rate(http_requests_total{handler="/orders"}[5m]))'
                     " / sum(rate(saga_x_count[5m]))"},
            {"refId": "no expr"}]},
        # a collapsed row holds its panels
        {"type": "row", "collapsed": True, "panels": [
            {"type": "stat", "targets": [{"expr": "max(saga_outbox_owed) + exported_saga_no"}]}]},
    ]}))
    assert metric_names_in_dashboard(dashboard) == {
        "saga_step_seconds", "http_requests_total", "saga_x", "saga_outbox_owed"}


def test_served_metric_names_are_the_names_the_dashboard_uses() -> None:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    registry = CollectorRegistry()
    Counter("saga_compensations", "never incremented", ["step"], registry=registry)
    Counter("saga_worker_connection_losses", "unlabelled", registry=registry)
    Histogram("saga_order_seconds", "no sample yet", ["status"], registry=registry)
    Gauge("saga_outbox_owed", "a gauge", registry=registry).set(3)
    served = served_metric_names(generate_latest(registry).decode())
    assert served >= {"saga_compensations_total", "saga_worker_connection_losses_total",
                      "saga_order_seconds", "saga_outbox_owed"}
    assert not served & {"saga_compensations", "saga_worker_connection_losses"}


def test_overlap_is_any_shared_cell() -> None:
    a = {"x": 0, "y": 0, "w": 12, "h": 8}
    assert overlap(a, {"x": 11, "y": 7, "w": 2, "h": 2})
    assert not overlap(a, {"x": 12, "y": 0, "w": 12, "h": 8})
    assert not overlap(a, {"x": 0, "y": 8, "w": 24, "h": 8})
