"""``pdrelay check-rules`` and ``pdrelay test-rules``: validate rule files, and show what bodies would produce."""

from __future__ import annotations

import argparse
import sys

from receiver.cli.common import json_text, load_rules_or_report, load_settings_or_report, printable
from receiver.errors import PayloadError
from receiver.models import parse_notification
from transforms import evaluation_to_json

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
    plugin loads."""
    rules = load_rules_or_report(args.rules)
    if rules is None:
        return 1
    results: list[dict[str, object]] = []
    status = 0
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
        results.append({"file": str(path), **evaluation_to_json(rules.evaluate(group))})
    # One body: its evaluation as it is (the golden files' format); several: a list naming each file.
    out: object = results
    if len(args.bodies) == 1 and results:
        out = {k: v for k, v in results[0].items() if k != "file"}
    sys.stdout.write(json_text(out, indent=2) + "\n")  # alert text, escaped for the terminal
    return status
