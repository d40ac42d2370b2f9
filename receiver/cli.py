"""The ``pdrelay`` command line: ``serve``, ``check-rules``, ``test-rules``, ``outbox list/show/replay/purge``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import sqlite3
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import uvloop
from aiohttp import web

from receiver.app import Deps, create_app
from receiver.errors import ConfigError, PayloadError
from receiver.logs import configure_logging
from receiver.models import parse_notification
from receiver.outbox.admin import AdminItem, NoSuchItem, OutboxAdmin
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

    _outbox_parser(sub)
    return p


def _settings(args: argparse.Namespace) -> Settings | None:
    """``--config``, else ``./pdrelay.yaml`` if present, else embedded defaults; ``None`` after reporting an error."""
    config = args.config if args.config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    try:
        return load_settings(config)
    except ConfigError as exc:
        print(f"pdrelay: {exc}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
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


# ---------------------------------------------------------------------- outbox


def _outbox_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, metavar="FILE",
                        help=f"config file (default: ./{DEFAULT_CONFIG} if present)")
    outbox = sub.add_parser("outbox", help="inspect the queue and the dead letters; replay after a fix")
    osub = outbox.add_subparsers(required=True, metavar="ACTION")

    ls = osub.add_parser("list", parents=[common], help="list stored events, oldest first")
    ls.add_argument("--state", choices=["queued", "dead"])
    ls.add_argument("--routing-key", metavar="NAME", help="routing key name (as in pagerduty.routing_keys)")
    ls.add_argument("--reason", metavar="R", help="failure reason, e.g. invalid_event")
    ls.add_argument("--limit", type=int, default=100, metavar="N", help="at most N items (default 100)")
    ls.add_argument("--json", action="store_true", help="one JSON object a line")
    ls.set_defaults(func=_outbox_list)

    show = osub.add_parser("show", parents=[common], help="one stored event in full")
    show.add_argument("id", type=int, metavar="ID")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_outbox_show)

    replay = osub.add_parser("replay", parents=[common],
                             help="re-render dead events with the current rules and queue them again")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", type=int, default=[], metavar="ID")
    which.add_argument("--all", action="store_true", help="every dead event")
    which.add_argument("--reason", metavar="R", help="every dead event with this reason")
    replay.set_defaults(func=_outbox_replay)

    purge = osub.add_parser("purge", parents=[common], help="delete stored events and release their notifications")
    what = purge.add_mutually_exclusive_group(required=True)
    what.add_argument("ids", nargs="*", type=int, default=[], metavar="ID")
    what.add_argument("--dead", action="store_true", help="every dead event")
    what.add_argument("--reason", metavar="R", help="every dead event with this reason")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge.add_argument("--force", action="store_true", help="also purge queued events given by ID")
    purge.set_defaults(func=_outbox_purge)


def _open_outbox(args: argparse.Namespace, settings: Settings | None = None) -> OutboxAdmin | None:
    """The configured SQLite outbox, or ``None`` after reporting why not."""
    settings = settings or _settings(args)
    if settings is None:
        return None
    if settings.outbox.backend != "sqlite":
        print(f"pdrelay: outbox commands need outbox.backend sqlite, not {settings.outbox.backend}", file=sys.stderr)
        return None
    path = settings.outbox.path
    if not path.exists():
        print(f"pdrelay: no outbox at {path}", file=sys.stderr)
        return None
    try:
        return OutboxAdmin(path)
    except sqlite3.Error as exc:
        print(f"pdrelay: cannot open outbox {path}: {exc}", file=sys.stderr)
        return None


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _outbox_list(args: argparse.Namespace) -> int:
    admin = _open_outbox(args)
    if admin is None:
        return 2
    with admin:
        items = admin.items(args.state, args.routing_key, args.reason, args.limit)
        now = admin.clock()
    if args.json:
        for it in items:
            print(json.dumps(it.to_json(now, with_body=False), ensure_ascii=False, sort_keys=True))
        return 0
    header = ("ID", "STATE", "ROUTING_KEY", "ACTION", "DEDUP_KEY", "ATTEMPTS", "REASON", "AGE", "LAST_STATUS")
    rows = [header] + [
        (str(it.id), it.status, it.routing_key, it.action, it.dedup_key, str(it.attempts), it.reason or "-",
         _age(now - it.created_at), "-" if it.last_status is None else str(it.last_status))
        for it in items
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _outbox_show(args: argparse.Namespace) -> int:
    admin = _open_outbox(args)
    if admin is None:
        return 2
    with admin:
        try:
            it = admin.get(args.id)
        except NoSuchItem as exc:
            print(f"pdrelay: {exc}", file=sys.stderr)
            return 1
        now = admin.clock()
    if args.json:
        print(json.dumps(it.to_json(now), ensure_ascii=False, sort_keys=True, indent=2))
        return 0
    fields = [
        ("id", str(it.id)), ("state", it.status), ("routing_key", it.routing_key), ("action", it.action),
        ("dedup_key", it.dedup_key), ("attempts", str(it.attempts)), ("reason", it.reason or "-"),
        ("last_status", "-" if it.last_status is None else str(it.last_status)),
        ("last_error", it.last_error or "-"), ("rules", ", ".join(it.rules) or "-"),
        ("created", f"{_when(it.created_at)} ({_age(now - it.created_at)} ago)"),
        ("next_attempt", _when(it.next_attempt_at) if it.status == "queued" else "-"),
    ]
    for name, value in fields:
        print(f"{name + ':':<14}{value}")
    print("body:")
    print(json.dumps(it.body, ensure_ascii=False, sort_keys=True, indent=2))
    return 0


def _selected(admin: OutboxAdmin, ids: list[int]) -> list[AdminItem] | None:
    """The items with these ids, or ``None`` after naming the first unknown one."""
    try:
        return [admin.get(i) for i in dict.fromkeys(ids)]
    except NoSuchItem as exc:
        print(f"pdrelay: {exc}", file=sys.stderr)
        return None


class _Progress:
    """``replay 3/10`` redrawn in place on a terminal's stderr; result lines are printed above it.

    Written here rather than taken from tqdm: it is a dozen lines, and the sidecar's image
    should not grow a dependency for one counter.
    """

    def __init__(self, total: int, label: str, stream: TextIO = sys.stderr) -> None:
        self.total, self.label, self.stream, self.done = total, label, stream, 0
        self.shown = total >= 2 and stream.isatty()
        self._draw()

    def _draw(self) -> None:
        if self.shown:
            filled = 20 * self.done // self.total
            bar = "#" * filled + "-" * (20 - filled)
            self.stream.write(f"\r\x1b[K{self.label} [{bar}] {self.done}/{self.total}")
            self.stream.flush()

    def line(self, text: str) -> None:
        """Print ``text`` on stdout, above the bar."""
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        print(text, flush=self.shown)
        self._draw()

    def advance(self) -> None:
        self.done += 1
        self._draw()

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _outbox_replay(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return 2
    admin = _open_outbox(args, settings)
    if admin is None:
        return 2
    with admin:
        if args.ids:
            chosen = _selected(admin, args.ids)
            if chosen is None:
                return 1
            ids = [it.id for it in chosen]
        else:
            ids = admin.ids("dead", args.reason)
        rules = _load_or_report(settings.rules.paths)
        if rules is None:
            return 2
        progress = _Progress(len(ids), "replay")
        replayed = 0
        try:
            for item_id in ids:
                outcome = admin.replay(item_id, rules)
                replayed += outcome.result == "replayed"
                progress.line(outcome.line())
                progress.advance()
        finally:
            progress.close()
    return 0 if replayed == len(ids) else 1


def _outbox_purge(args: argparse.Namespace) -> int:
    admin = _open_outbox(args)
    if admin is None:
        return 2
    with admin:
        if args.ids:
            chosen = _selected(admin, args.ids)
            if chosen is None:
                return 1
            queued = [str(it.id) for it in chosen if it.status == "queued"]
            if queued and not args.force:
                print(f"pdrelay: refusing to purge queued item(s) {', '.join(queued)} without --force", file=sys.stderr)
                return 1
            ids = [it.id for it in chosen]
        else:
            ids = admin.ids("dead", args.reason)
        if ids and not args.yes:
            if not sys.stdin.isatty():
                print(f"pdrelay: refusing to purge {len(ids)} item(s) without --yes: stdin is not a terminal",
                      file=sys.stderr)
                return 1
            answer = input(f"purge {len(ids)} item(s)? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("pdrelay: nothing purged", file=sys.stderr)
                return 1
        purged = admin.purge(ids, include_queued=bool(args.ids) and args.force)
    print(f"purged {purged}")
    return 0
