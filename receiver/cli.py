"""The ``pdrelay`` command line: ``serve``, ``check-rules``, ``test-rules``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import uvloop
from aiohttp import web

from receiver.app import Deps, create_app
from receiver.errors import ConfigError, PayloadError
from receiver.logs import configure_logging
from receiver.models import parse_notification
from receiver.settings import Settings, load_settings
from receiver.state import STATE
from transforms import RulesError, RuleSet, evaluation_to_json, load_rules

__all__ = ["main"]

DEFAULT_CONFIG = Path("pdrelay.yaml")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pdrelay", description="Alertmanager → PagerDuty, durably.")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the sidecar")
    serve.add_argument("--config", type=Path, help=f"config file (default: ./{DEFAULT_CONFIG} if present)")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.set_defaults(func=_serve)

    check = sub.add_parser("check-rules", help="validate rule files; exit 1 with file:line: message on error")
    check.add_argument("paths", nargs="+", type=Path)
    check.set_defaults(func=_check_rules)

    test = sub.add_parser("test-rules", help="print the PagerDuty events bodies would produce; sends nothing")
    test.add_argument("--rules", type=Path, action="append", required=True, help="rule file or folder")
    test.add_argument("bodies", nargs="+", type=Path, help="Alertmanager webhook JSON files")
    test.set_defaults(func=_test_rules)
    return p


def _serve(args: argparse.Namespace) -> int:
    config = args.config if args.config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        print(f"pdrelay: {exc}", file=sys.stderr)
        return 2
    log = configure_logging(args.log_level, settings.secrets())
    try:
        app = create_app(settings, Deps(log=log))
    except RulesError as exc:
        print(f"pdrelay: rules refused:\n{exc}", file=sys.stderr)
        return 2
    _announce(settings, app, log)
    app.on_startup.append(_install_sighup)
    # The outbox's commit thread and read thread need the GIL back promptly when their
    # SQLite call returns; the default 5 ms switch interval made commits wait on a busy
    # event loop (intake benchmark: +15 % throughput, lower p99 at 0.5 ms).
    sys.setswitchinterval(0.0005)
    # Everything built so far (rules, settings, modules) lives as long as the process:
    # keep the collector from walking it again and again under load.
    gc.collect()
    gc.freeze()
    # Intake allocates many short-lived containers that reference counting frees; collect
    # the young generation less often (default 700) to keep its pauses out of the p99.
    gc.set_threshold(20_000, 20, 20)
    # uvloop's event loop: +40 % intake throughput in tests/bench/bench_intake.py.
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    web.run_app(
        app, host=settings.server.host, port=settings.server.port, print=None,
        access_log=None, shutdown_timeout=10.0, handle_signals=True, loop=loop,
    )
    return 0


def _announce(settings: Settings, app: web.Application, log: object) -> None:
    st = app[STATE]
    pd = settings.pagerduty
    st.log.info(
        "pdrelay starting",
        extra={
            "listen": settings.server.listen, "config": settings.source, "outbox": str(settings.outbox.path),
            "rules_sha256": st.rulebook.current.sha256, "events_url": pd.events_url,
            "routing_keys": sorted(pd.routing_keys),
        },
    )
    if st.dry_run:
        why = "pagerduty.dry_run is true" if pd.dry_run else "no routing key is configured"
        st.log.warning(f"DRY-RUN: {why}; events are accepted, rendered, stored and logged, but NOT sent")
    if not settings.server.allow_unauthenticated:
        st.log.warning(f"no authentication configured: listening on loopback only ({settings.server.listen})")


async def _install_sighup(app: web.Application) -> None:
    st = app[STATE]

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, st.rulebook.try_reload)


def _load_or_report(paths: Sequence[Path]) -> RuleSet | None:
    """The rules, or ``None`` after printing each ``file:line: message`` to stderr."""
    try:
        return load_rules(paths)
    except RulesError as exc:
        print(str(exc), file=sys.stderr)
        return None


def _check_rules(args: argparse.Namespace) -> int:
    rules = _load_or_report(args.paths)
    if rules is None:
        return 1
    print(f"ok: {len(rules.sources)} file(s), sha256 {rules.sha256}")
    return 0


def _test_rules(args: argparse.Namespace) -> int:
    rules = _load_or_report(args.rules)
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
            print(f"{path}: not an Alertmanager webhook body{where}: {exc.message}", file=sys.stderr)
            status = 1
            continue
        results.append({"file": str(path), **evaluation_to_json(rules.evaluate(group))})
    # One body: its evaluation as it is (the golden files' format); several: a list naming each file.
    out: object = results
    if len(args.bodies) == 1 and results:
        out = {k: v for k, v in results[0].items() if k != "file"}
    json.dump(out, sys.stdout, indent=2, sort_keys=True, ensure_ascii=False)
    sys.stdout.write("\n")
    return status
