"""Build deploy/grafana/pdrelay.json, the Grafana dashboard of pdrelay's metrics, with grafana-foundation-sdk.

    .venv/bin/python deploy/grafana/build_dashboard.py            # rewrites deploy/grafana/pdrelay.json
    .venv/bin/python deploy/grafana/build_dashboard.py --check    # exit 1 if the committed file differs

Edit the dashboard here, not in the JSON: tests/deploy check that the committed file is this script's
output and that every metric it queries exists on a running pdrelay's /metrics. Every query is scoped
to the `job` and `instance` variables; the per-key panels also to `routing_key`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, statetimeline, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUTPUT = Path(__file__).resolve().parent / "pdrelay.json"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'job=~"$job", instance=~"$instance"'  # every query's scope
KEY = f'{SEL}, routing_key=~"$routing_key"'  # and the per-key panels'
RATE = "$__rate_interval"


def query(expr: str, legend: str = "__auto", ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)


def series(title: str, description: str, unit: str, *queries: prometheus.Dataquery,
           stacked: bool = False) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
             .height(8).span(12).fill_opacity(10).min(0)
             .legend(common_b.VizLegendOptions().display_mode(common.LegendDisplayMode.TABLE)
                     .placement(common.LegendPlacement.BOTTOM).show_legend(True).calcs(["lastNotNull", "max"])))
    if stacked:
        panel = panel.stacking(common_b.StackingConfig().mode(common.StackingMode.NORMAL))
    for q in queries:
        panel = panel.with_target(q)
    return panel


def single(title: str, description: str, expr: str, unit: str = "none",
           mappings: list[model.ValueMapping] | None = None,
           steps: list[model.Threshold] | None = None) -> stat.Panel:
    panel = (stat.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
             .height(4).span(4).with_target(query(expr))
             .graph_mode(common.BigValueGraphMode.NONE).color_mode(common.BigValueColorMode.BACKGROUND)
             .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))
    if mappings:
        panel = panel.mappings(mappings)
    if steps:
        panel = panel.thresholds(dash.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(steps))
    return panel


def steps(*pairs: tuple[float | None, str]) -> list[model.Threshold]:
    return [model.Threshold(value=value, color=color) for value, color in pairs]


def texts(pairs: dict[str, tuple[str, str]]) -> list[model.ValueMapping]:
    return [model.ValueMap(options={value: model.ValueMappingResult(text=text, color=color, index=i)
                                    for i, (value, (text, color)) in enumerate(pairs.items())})]


def overview() -> list[stat.Panel]:
    return [
        single("pdrelay up", "Prometheus' scrape of pdrelay (1: it answers).", f"min(up{{{SEL}}})",
               mappings=texts({"0": ("DOWN", "red"), "1": ("UP", "green")})),
        single("Version", "pdrelay_build_info: the running version.",
               f"count by (version) (pdrelay_build_info{{{SEL}}})"),
        single("Dry-run", "1: pdrelay sends nothing (pagerduty.dry_run, or no routing key configured).",
               f"max(pdrelay_dry_run{{{SEL}}})",
               mappings=texts({"0": ("sending", "green"), "1": ("DRY-RUN", "orange")})),
        single("Queued", "Events waiting for PagerDuty, every key.", f"sum(pdrelay_outbox_queued{{{KEY}}})",
               steps=steps((None, "green"), (100, "orange"), (500, "red"))),
        single("Oldest queued", "Age of the oldest event still waiting, any key.",
               f"max(pdrelay_outbox_oldest_queued_age_seconds{{{KEY}}})", unit="s",
               steps=steps((None, "green"), (120, "orange"), (600, "red"))),
        single("Dead letters stored", "Events PagerDuty will never get unless replayed (`pdrelay outbox list --state "
               "dead`).", f'sum(pdrelay_outbox_depth{{{SEL}, state="dead"}})',
               steps=steps((None, "green"), (1, "red"))),
    ]


def intake() -> list[timeseries.Panel]:
    return [
        series("Intake answers", "POST /v1/alertmanager answers by status code; 503: pdrelay could not store or "
               "was saturated (Alertmanager retries).", "reqps",
               query(f"sum by (code) (rate(pdrelay_intake_responses_total{{{SEL}}}[{RATE}]))", "{{code}}")),
        series("Refused bodies", "Bodies refused, by reason.", "reqps",
               query(f"sum by (reason) (rate(pdrelay_bodies_rejected_total{{{SEL}}}[{RATE}]))", "{{reason}}")),
        series("Alerts", "Alerts in accepted bodies, and those a rule dropped.", "ops",
               query(f"sum(rate(pdrelay_alerts_received_total{{{SEL}}}[{RATE}]))", "received"),
               query(f"sum(rate(pdrelay_alerts_dropped_total{{{SEL}}}[{RATE}]))", "dropped", "B")),
        series("Auth refusals", "Requests refused by authentication, by endpoint group and reason.", "reqps",
               query(f"sum by (group, reason) (rate(pdrelay_auth_refused_total{{{SEL}}}[{RATE}]))",
                     "{{group}} {{reason}}")),
    ]


def events() -> list[timeseries.Panel]:
    def by_key(metric: str) -> str:
        return f"sum by (routing_key) (rate({metric}{{{KEY}}}[{RATE}]))"

    return [
        series("Enqueued", "Events committed to the outbox, per routing key.", "ops",
               query(by_key("pdrelay_events_enqueued_total"), "{{routing_key}}"), stacked=True),
        series("Sent", "Events PagerDuty accepted, per routing key.", "ops",
               query(by_key("pdrelay_events_sent_total"), "{{routing_key}}"), stacked=True),
        series("Dead-lettered", "Events given up on, per routing key and reason.", "ops",
               query(f"sum by (routing_key, reason) (rate(pdrelay_events_dead_lettered_total{{{KEY}}}[{RATE}]))",
                     "{{routing_key}} {{reason}}")),
        series("Throttled (429)", "PagerDuty's 429 answers per routing key; pdrelay backs off and retries.", "ops",
               query(by_key("pdrelay_events_throttled_total"), "{{routing_key}}")),
    ]


def outbox() -> list[timeseries.Panel]:
    return [
        series("Queue depth", "Events waiting for PagerDuty, per routing key.", "short",
               query(f"sum by (routing_key) (pdrelay_outbox_queued{{{KEY}}})", "{{routing_key}}"), stacked=True),
        series("Oldest queued age", "How long the oldest waiting event of each key has waited (0: none waits).",
               "s", query(f"max by (routing_key) (pdrelay_outbox_oldest_queued_age_seconds{{{KEY}}})",
                          "{{routing_key}}")),
    ]


def delivery() -> list[timeseries.Panel | heatmap.Panel | statetimeline.Panel]:
    limiter = f"pdrelay_limiter_wait_seconds_bucket{{{KEY}}}"
    wait_heatmap = (
        heatmap.Panel().title("Limiter wait").datasource(DATASOURCE).height(8).span(12)
        .description("Time events waited for their routing key's budget (PagerDuty allows about 120 a minute).")
        .with_target(query(f"sum by (le) (increase({limiter}[{RATE}]))", "{{le}}")
                     .format(PromQueryFormat.HEATMAP))
        .calculate(False).unit("s"))
    quantiles = [query(f"histogram_quantile({q}, sum by (le) (rate(pdrelay_send_duration_seconds_bucket{{{SEL}}}"
                       f"[{RATE}])))", f"p{round(q * 100)}", ref) for q, ref in ((0.5, "A"), (0.9, "B"), (0.99, "C"))]
    breaker = (
        statetimeline.Panel().title("Circuit breaker").datasource(DATASOURCE).height(8).span(12)
        .description("Per PagerDuty endpoint: closed (sending), half-open (trying), open (not sending).")
        .with_target(query(f"max by (endpoint) (pdrelay_breaker_state{{{SEL}}})", "{{endpoint}}"))
        .mappings(texts({"0": ("closed", "green"), "1": ("half-open", "orange"), "2": ("open", "red")})))
    return [
        wait_heatmap,
        series("Limiter wait p99", "99th percentile of the wait for budget, per routing key.", "s",
               query(f"histogram_quantile(0.99, sum by (le, routing_key) (rate({limiter}[{RATE}])))",
                     "{{routing_key}}")),
        series("Send latency", "Time of one PagerDuty request.", "s", *quantiles),
        series("Failed attempts", "Failed delivery attempts, by reason (retried unless dead-lettered).", "ops",
               query(f"sum by (reason) (rate(pdrelay_events_failed_total{{{SEL}}}[{RATE}]))", "{{reason}}")),
        breaker,
        series("Dispatcher restarts and audit errors", "Restarts of the sending worker after an error; audit "
               "entries that could not be written.", "short",
               query(f"sum(increase(pdrelay_dispatcher_restarts_total{{{SEL}}}[{RATE}]))", "dispatcher restarts"),
               query(f"sum(increase(pdrelay_audit_errors_total{{{SEL}}}[{RATE}]))", "audit errors", "B")),
    ]


def rules() -> list[timeseries.Panel]:
    return [
        series("Rule hits", "Alerts each rule applied to.", "ops",
               query(f"sum by (rule) (rate(pdrelay_rule_hits_total{{{SEL}}}[{RATE}]))", "{{rule}}")),
        series("Rules reloads", "1: the last (re)load succeeded; the age of the rules in force; template renders "
               "that failed and fell back.", "short",
               query(f"min by (instance) (pdrelay_rules_last_reload_successful{{{SEL}}})",
                     "last reload ok {{instance}}"),
               query(f"time() - max by (instance) (pdrelay_rules_last_reload_success_timestamp_seconds{{{SEL}}})",
                     "rules age (s) {{instance}}", "B"),
               query(f"sum(rate(pdrelay_template_errors_total{{{SEL}}}[{RATE}]))", "template errors/s", "C")),
    ]


def process() -> list[timeseries.Panel]:
    return [
        series("Memory", "Resident memory of the pdrelay process (the Kubernetes examples limit it to 256 MiB).",
               "bytes", query(f"process_resident_memory_bytes{{{SEL}}}", "{{instance}}")),
        series("CPU", "CPU time used per second.", "percentunit",
               query(f"rate(process_cpu_seconds_total{{{SEL}}}[{RATE}])", "{{instance}}")),
        series("Open files", "File descriptors open (connections, the outbox, the audit log).", "short",
               query(f"process_open_fds{{{SEL}}}", "{{instance}}")),
        series("Python GC", "Objects collected per second, by generation.", "ops",
               query(f"sum by (generation) (rate(python_gc_objects_collected_total{{{SEL}}}[{RATE}]))",
                     "gen {{generation}}")),
    ]


def variables() -> list[dash.DatasourceVariable | dash.QueryVariable]:
    def labels(name: str, label: str, expr: str) -> dash.QueryVariable:
        return (dash.QueryVariable(name).label(label).datasource(DATASOURCE)
                .query({"query": expr, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1})
                .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(model.VariableSort.ALPHABETICAL_ASC)
                .multi(True).include_all(True).all_value(".*")
                .current(model.VariableOption(selected=True, text="All", value="$__all")))

    return [
        dash.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        labels("job", "Job", "label_values(pdrelay_build_info, job)"),
        labels("instance", "Instance", 'label_values(pdrelay_build_info{job=~"$job"}, instance)'),
        labels("routing_key", "Routing key", 'label_values(pdrelay_outbox_queued{job=~"$job"}, routing_key)'),
    ]


def build() -> model.Dashboard:
    board = (dash.Dashboard("pdrelay").uid("pdrelay").description(
        "pdrelay: Alertmanager webhooks to PagerDuty Events v2. Built by deploy/grafana/build_dashboard.py.")
        .tags(["pdrelay", "alertmanager", "pagerduty"]).time("now-6h", "now").refresh("30s")
        .timezone("browser").tooltip(model.DashboardCursorSync.CROSSHAIR).editable())
    for variable in variables():
        board = board.with_variable(variable)
    sections: list[tuple[str, list[timeseries.Panel] | list[stat.Panel]
                         | list[timeseries.Panel | heatmap.Panel | statetimeline.Panel]]] = [
        ("Overview", overview()), ("Intake", intake()), ("Events per routing key", events()),
        ("Outbox", outbox()), ("Delivery", delivery()), ("Rules", rules()), ("Process", process()),
    ]
    ids = iter(range(1, 1000))  # Grafana wants every panel, row or not, to have its own id
    for title, panels in sections:
        board = board.with_row(dash.Row(title).id(next(ids)))
        for panel in panels:
            board = board.with_panel(panel.id(next(ids)))
    return board.build()


def render() -> str:
    """The dashboard as the committed file holds it."""
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["--check"]:
        if OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is not this script's output: run {Path(__file__).name} to rewrite it", file=sys.stderr)
            return 1
        return 0
    if argv:
        print(f"usage: {Path(__file__).name} [--check]", file=sys.stderr)
        return 2
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
