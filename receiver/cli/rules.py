"""``pdrelay check-rules`` and ``pdrelay test-rules``: validate rule files, and show what bodies would produce."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from receiver.cli.common import json_text, load_rules_or_report, load_settings_or_report, printable
from receiver.errors import PayloadError
from receiver.models import parse_notification
from transforms import trace_to_json

__all__ = ["check_rules", "test_rules"]


def check_rules(args: argparse.Namespace) -> int:
    """Exit 1 with ``file:line: message`` lines on error; with ``--config``, routing key names are checked too.

    A ``module:callable`` plugin loads only from the modules ``--config``'s ``rules.allow_plugins`` allows
    (without ``--config``, none): checking a rules file from a pull request runs none of its code."""
    routing_keys: set[str] = set()
    allow_plugins: tuple[str, ...] = ()
    if args.config is not None:
        settings = load_settings_or_report(args, read_only=True)
        if settings is None:
            return 2
        routing_keys = set(settings.pagerduty.routing_keys)
        allow_plugins = settings.rules.allow_plugins
    rules = load_rules_or_report(args.paths, routing_keys, allow_plugins)
    if rules is None:
        return 1
    print(f"ok: {len(rules.sources)} file(s), sha256 {rules.sha256}")
    return 0


def test_rules(args: argparse.Namespace) -> int:
    """Print what the bodies would produce; like ``check-rules`` without ``--config``, no ``module:callable``
    plugin loads.

    ``--trace`` adds each alert's steps (:func:`transforms.trace_to_json`); ``--text`` prints the result as
    lines for a terminal instead of JSON (the JSON is the stable form). Templates that failed while
    rendering are listed on stderr, one line per alert and field, and make the exit status 1 unless
    ``--allow-template-errors``. ``--now`` (RFC 3339, with an offset) is the time ``when_time`` tests."""
    now = _now(args.now)
    if now is None:
        return 2
    rules = load_rules_or_report(args.rules)
    if rules is None:
        return 1
    results: list[dict[str, object]] = []
    status = 0
    errors = 0
    for path in args.bodies:
        try:
            group = parse_notification(path.read_bytes())
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
            status = 1
            continue
        except PayloadError as exc:
            where = f" at {exc.field}" if exc.field else ""
            print(printable(f"{path}: not an Alertmanager webhook body{where}: {exc.message}"), file=sys.stderr)
            status = 1
            continue
        # The same evaluation as at intake, watched step by step: the template errors come with their alert.
        traced = trace_to_json(rules, group, now)
        failed = traced["template_errors"]
        where = f"{path}: " if len(args.bodies) > 1 else ""
        for error in failed:
            line = f"{where}{error['fingerprint']} {error['rule']}.{error['field']}: {error['message']}"
            print(printable(line), file=sys.stderr)  # labels are hostile: escaped for the terminal
        errors += len(failed)
        if not args.trace:
            del traced["trace"], traced["template_errors"]
        results.append({"file": str(path), **traced})
    if args.text:
        for result in results:
            if len(args.bodies) > 1:
                sys.stdout.write(printable(f"== {result['file']}") + "\n")
            sys.stdout.writelines(line + "\n" for line in _text_lines(result))
    else:
        # One body: its evaluation as it is (the golden files' format); several: a list naming each file.
        out: object = results
        if len(args.bodies) == 1 and results:
            out = {k: v for k, v in results[0].items() if k != "file"}
        sys.stdout.write(json_text(out, indent=2) + "\n")  # alert text, escaped for the terminal
    if errors:
        if args.allow_template_errors:
            print(f"warning: {errors} template error(s); allowed by --allow-template-errors", file=sys.stderr)
        else:
            print(f"{errors} template error(s): those fields fell back to earlier values"
                  " (--allow-template-errors to exit 0)", file=sys.stderr)
            status = 1
    return status


def _now(value: str | None) -> datetime | None:
    """``--now`` as an aware datetime (default: the system clock's now); None after reporting a bad value."""
    if value is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.utcoffset() is None:
        print(printable(f"pdrelay test-rules: --now {value!r} is not an RFC 3339 time with an offset"
                        " (e.g. 2026-03-29T07:30:00Z or 2026-03-29T09:30:00+02:00)"), file=sys.stderr)
        return None
    return parsed


def _text_lines(result: dict[str, Any]) -> Iterator[str]:
    """One evaluation as lines: each alert's steps (with ``--trace``), then the events, drops and invalid
    events. Values are shown as JSON (:func:`json_text`), every other text through :func:`printable`: alert
    content reaches the terminal escaped."""
    p = printable
    for alert in result.get("trace", ()):
        yield f"alert {p(alert['fingerprint'])} ({p(alert['alertname'])})"
        for step in alert["steps"]:
            if not step["matched"]:
                yield f"  {p(step['rule'])}: not matched ({step['skipped_by']})"
                continue
            parts = [f"{p(c['field'])}: {json_text(c['old'])} \u2192 {json_text(c['new'])}" for c in step["changes"]]
            parts += [flag for flag in ("dropped", "stopped") if step[flag]]
            yield f"  {p(step['rule'])}: {'; '.join(parts) or 'matched, changed nothing'}"
        for error in result.get("template_errors", ()):
            if error["fingerprint"] == alert["fingerprint"]:
                yield p(f"  template error {error['rule']}.{error['field']}: {error['message']}")
    for event in result["events"]:
        rules = ", ".join(event["rules"])
        yield p(f"event {event['action']} {event['routing_key']} {event['dedup_key']} (rules: {rules})")
        yield "  " + json_text(event["body"])
    for dropped in result["dropped"]:
        yield p(f"dropped {dropped['fingerprint']} by {dropped['rule']}")
    for invalid in result["invalid"]:
        yield p(f"invalid {invalid['action']} {invalid['routing_key']} {invalid['dedup_key']}: {invalid['reason']}")
