"""deploy/grafana-dashboard.json against a live /metrics scrape.

The dashboard may only query series that a gateway and worker really export, with
labels they really carry, and every metric family of `Metrics` must be on a panel.
The scrape comes after traffic that makes every family show samples: a send, a
retry, a dead letter, publishes, HTTP requests, breaker state and queue depths.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from wa_gateway.metrics import Metrics
from wa_gateway.provider import PermanentError, TransientError

from ..conftest import wait_for

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
TARGET_LABELS = {"job", "instance"}  # added by Prometheus when it scrapes
METRIC = re.compile(r"\b(wa_[a-z0-9_]+)\b")
SELECTOR = re.compile(r"\b(wa_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LEGEND_LABEL = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included, rows themselves excluded."""
    found = []
    for panel in dashboard["panels"]:
        found += [panel] if panel["type"] != "row" else panel.get("panels", [])
    return found


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(where, PromQL, legend) of every panel target and every query variable."""
    found = [(f"panel {p['title']!r}", t["expr"], t.get("legendFormat", "")) for p in panels(dashboard)
             for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"variable {variable['name']!r}", variable["query"]["query"], ""))
    return found


@pytest.fixture
async def scrape(make_settings, start_gateway, start_worker, scripted, amqp) -> dict[str, set[str]]:
    """Sample name -> label names, from /metrics after every kind of traffic."""
    settings = make_settings(wa_provider="scripted", wa_retry_delays=[0.2, 0.4])
    client, services = await start_gateway(settings)
    await start_worker(services)
    metrics = services.metrics

    scripted.script = [PermanentError("invalid number", provider_status=400, provider_code="131026")]
    assert (await client.post("/notify", json={"to": "logistic", "text": "dead"})).status == 202
    await wait_for(lambda: _total(metrics.dead) >= 1)
    scripted.script = [TransientError("busy", provider_status=503, provider_code="503")] * 3  # blips used up
    assert (await client.post("/notify", json={"to": "logistic", "text": "retried, then sent"})).status == 202
    await wait_for(lambda: _total(metrics.retried) >= 1 and _total(metrics.sent) >= 1, timeout=15)
    assert (await client.get("/notify/no-such-id")).status == 404
    assert (await client.post("/notify", data=b"{", headers={"Content-Type": "application/json"})).status == 400

    text = await (await client.get("/metrics")).text()
    labels: dict[str, set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels[sample.name] |= set(sample.labels)
    # a labelled family shows no series before its first event (a late failure, a receipt,
    # a callback): for those, the labels the process declares for them
    for family, names in declared_labels(metrics).items():
        for name, extra in _series(family):
            labels.setdefault(name, set(names) | extra)
    return dict(labels)


def declared_labels(metrics: Metrics) -> dict[Any, tuple[str, ...]]:
    """Each metric of a process with the label names it declares."""
    return {collector: tuple(collector._labelnames) for collector in vars(metrics).values()
            if hasattr(collector, "_labelnames")}


def _series(collector: Any) -> list[tuple[str, set[str]]]:
    """The sample names a metric exports, with the labels a sample adds (a bucket's `le`)."""
    name = collector._name  # prometheus_client keeps the name and type here
    kind = collector._type
    if kind == "counter":
        return [(f"{name}_total", set())]
    if kind == "histogram":
        return [(f"{name}_bucket", {"le"}), (f"{name}_sum", set()), (f"{name}_count", set())]
    return [(name, set())]


def _total(counter: Any) -> float:
    return sum(sample.value for metric in counter.collect() for sample in metric.samples
               if sample.name.endswith("_total"))


def test_dashboard_is_a_grafana_dashboard_on_a_prometheus_datasource_variable():
    dashboard = load()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["name"] == "datasource" and variable["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]] + [p["id"] for r in dashboard["panels"] for p in r.get("panels", [])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["refId"] and target["expr"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), panel["title"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE


async def test_every_series_and_label_the_dashboard_queries_is_in_a_live_scrape(scrape):
    problems = []
    for where, expr, legend in queries(load()):
        used = METRIC.findall(expr)
        if not used:
            problems.append(f"{where}: queries no wa_* metric: {expr}")
        for name in used:
            if name not in scrape:
                problems.append(f"{where}: {name} is not exported")
        for name, matchers in SELECTOR.findall(expr):
            for label in MATCHER.findall(matchers):
                if label not in scrape.get(name, set()) | TARGET_LABELS:
                    problems.append(f"{where}: {name} has no label {label!r}")
        available = set().union(*(scrape.get(name, set()) for name in used)) | TARGET_LABELS
        grouped: set[str] = set()
        for clause in GROUPING.findall(expr):
            labels = {label.strip() for label in clause.split(",") if label.strip()}
            grouped |= labels
            for label in labels - available:
                problems.append(f"{where}: groups by {label!r}, which {', '.join(used)} does not carry")
        for label in set(LEGEND_LABEL.findall(legend)) - (grouped or available):
            problems.append(f"{where}: legend uses {{{{{label}}}}}, which the query result does not keep")
    assert not problems, "\n".join(problems)


def test_every_metric_family_is_on_a_panel():
    used = {name for _, expr, _ in queries(load()) for name in METRIC.findall(expr)}
    families = {metric.name for metric in Metrics().registry.collect()}
    missing = [
        family for family in sorted(families)
        if not any(name == family or re.fullmatch(rf"{family}_(total|bucket|sum|count)", name) for name in used)
    ]
    assert families and not missing, f"metric families without a panel: {missing}"


def test_both_queues_histograms_quantiles_and_breaker_states_are_shown():
    dashboard = load()
    exprs = [expr for _, expr, _ in queries(dashboard)]
    assert any("wa_queue_messages" in e and 'queue=~".+\\\\.dead"' in e for e in exprs)  # the dead-letter queue
    assert any("wa_queue_messages" in e and 'queue!~".+\\\\.(dead|ledger|callbacks)"' in e for e in exprs)  # work queues
    assert any("wa_queue_messages" in e and 'queue=~".+\\\\.(ledger|callbacks)"' in e for e in exprs)
    for histogram in ("wa_publish_seconds", "wa_provider_seconds"):
        for quantile in ("0.5", "0.99"):
            assert any(f"histogram_quantile({quantile}," in e and f"{histogram}_bucket" in e for e in exprs), (
                histogram, quantile)
    [breaker] = [p for p in panels(dashboard) if any("wa_breaker_state" in t["expr"] for t in p["targets"])]
    texts = {o["text"] for m in breaker["fieldConfig"]["defaults"]["mappings"] for o in m["options"].values()}
    assert texts == {"closed", "half-open", "open"}
