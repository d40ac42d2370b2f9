"use strict";
// The rule playground: posts the body to status/playground and shows the answer. Every value from
// the answer or the body becomes a text node, never parsed as HTML: it is hostile input.
(function () {
  const $ = (id) => document.getElementById(id);
  const result = $("result");
  const state = $("run-state");

  function shown(value) {
    if (value === undefined || value === null) return "—";
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function el(tag, cls, ...children) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(shown(child)));
    }
    return node;
  }

  function table(id, headers, rows) {
    const head = el("tr", "", ...headers.map((h) => el("th", "", h)));
    const body = el("tbody", "", ...rows);
    const t = el("table", "", el("thead", "", head), body);
    t.id = id;
    return t;
  }

  function section(title, count, content) {
    const box = el("div", "");
    box.append(el("h3", "", title + " (" + count + ")"));
    box.append(count ? content : el("p", "", "none"));
    return box;
  }

  function eventRow(ev) {
    const payload = (ev.body && ev.body.payload) || {};
    const body = el("details", "", el("summary", "", "body"), el("pre", "", JSON.stringify(ev.body, null, 2)));
    return el("tr", "", el("td", "", ev.routing_key), el("td", "", ev.action), el("td", "", ev.dedup_key),
      el("td", "", payload.summary), el("td", "", payload.severity), el("td", "", (ev.rules || []).join(", ")),
      el("td", "", body));
  }

  function changeList(changes) {
    const cell = el("td", "");
    for (const c of changes) {
      cell.append(el("code", "change", c.field + ": " + JSON.stringify(c.old) + " \u2192 " + JSON.stringify(c.new)));
    }
    return cell;
  }

  function traceTable(alert, errors) {
    const rows = alert.steps.map((step, i) => {
      const failed = errors.filter((e) => e.rule === step.rule);
      const outcome = step.matched ? "matched" : "skipped by " + shown(step.skipped_by);
      const flags = [step.dropped ? "dropped" : "", step.stopped ? "stopped" : ""].filter(Boolean).join(", ");
      const changes = changeList(step.changes || []);
      for (const e of failed) changes.append(el("span", "change", "template error in " + e.field + ": " + e.message));
      const cls = failed.length ? "template-error" : (step.matched ? "" : "skipped");
      return el("tr", cls, el("td", "num", String(i + 1)), el("td", "", step.rule), el("td", "", outcome),
        changes, el("td", "", flags));
    });
    const t = table("", ["#", "step", "outcome", "changes (old \u2192 new)", ""], rows);
    t.className = "trace";
    return t;
  }

  function render(answer) {
    const events = answer.events || [], invalid = answer.invalid || [], dropped = answer.dropped || [];
    const errors = answer.template_errors || [], trace = answer.trace || [];
    result.replaceChildren();
    result.append(el("p", "", events.length + " events, " + invalid.length + " invalid, " + dropped.length +
      " dropped, " + errors.length + " template errors."));
    result.lastChild.id = "summary";
    result.append(section("Events", events.length, table("events",
      ["routing key", "action", "dedup key", "summary", "severity", "rules", ""], events.map(eventRow))));
    result.append(section("Invalid events (dead-lettered)", invalid.length, table("invalid",
      ["routing key", "action", "dedup key", "reason", "rules"],
      invalid.map((ev) => el("tr", "", el("td", "", ev.routing_key), el("td", "", ev.action),
        el("td", "", ev.dedup_key), el("td", "", ev.reason), el("td", "", (ev.rules || []).join(", ")))))));
    result.append(section("Dropped alerts", dropped.length, table("dropped", ["fingerprint", "rule"],
      dropped.map((d) => el("tr", "", el("td", "", d.fingerprint), el("td", "", d.rule))))));
    if (errors.length) {
      const box = section("Template errors", errors.length, table("template-errors",
        ["fingerprint", "rule", "field", "message"],
        errors.map((e) => el("tr", "template-error", el("td", "", e.fingerprint), el("td", "", e.rule),
          el("td", "", e.field), el("td", "", e.message)))));
      box.className = "error";
      result.append(box);
    }
    const traces = el("div", "");
    traces.id = "trace";
    traces.append(el("h3", "", "Trace, per alert"));
    for (const alert of trace) {
      traces.append(el("h4", "", shown(alert.alertname) + " (" + shown(alert.fingerprint) + ")"));
      traces.append(traceTable(alert, errors.filter((e) => e.fingerprint === alert.fingerprint)));
    }
    result.append(traces);
  }

  function fail(message) {
    const box = el("div", "error", message);
    box.id = "playground-error";
    result.replaceChildren(box);
  }

  async function run() {
    state.textContent = "running\u2026";
    try {
      const answer = await fetch("status/playground", {
        method: "POST", credentials: "same-origin", cache: "no-store",
        headers: { "Content-Type": "application/json" }, body: $("body").value,
      });
      const type = answer.headers.get("Content-Type") || "";
      const data = type.startsWith("application/json") ? await answer.json() : {};
      if (answer.ok) {
        render(data);
      } else {
        const where = data.field ? " (at " + data.field + ")" : "";
        fail(answer.status + ": " + shown(data.error || answer.statusText) + where);
      }
    } catch (err) {
      fail("the request failed: " + err);
    }
    state.textContent = "";
  }

  $("example").addEventListener("change", (e) => {
    const option = e.target.selectedOptions[0];
    if (option && option.dataset.body) {
      $("body").value = JSON.stringify(JSON.parse(option.dataset.body), null, 2);
    }
  });
  $("body").addEventListener("input", () => { $("example").value = ""; });
  $("run").addEventListener("click", run);
})();
