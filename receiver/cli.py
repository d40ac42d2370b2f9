"""The ``pdrelay`` command line.

``serve``, ``check-rules``, ``test-rules``, ``outbox list/show/replay/purge/rekey``, ``keygen``, ``audit verify``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import getpass
import ipaddress
import json
import os
import signal
import sqlite3
import ssl
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import uvloop
from aiohttp import web

from receiver.app import Deps, create_app
from receiver.audit import AuditLog, AuditSink, NullAudit, verify_main
from receiver.auth import OPEN_PATHS, Authenticator, server_ssl_context
from receiver.crypto import generate_key
from receiver.errors import ConfigError, PayloadError
from receiver.logs import configure_logging
from receiver.models import parse_notification
from receiver.outbox.admin import AdminItem, NoSuchItem, OutboxAdmin
from receiver.outbox.sealing import Sealer
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

    audit = sub.add_parser("audit", help="the tamper-evident audit log")
    asub = audit.add_subparsers(required=True, metavar="ACTION")
    verify = asub.add_parser("verify", help="check the hash chain of one or more audit files (rotated ones too)")
    verify.add_argument("files", nargs="+", metavar="FILE")
    verify.set_defaults(func=lambda args: verify_main(args.files, sys.stdout, sys.stderr))

    keygen = sub.add_parser("keygen", help="print a new 256-bit encryption key (base64) for security.encryption_key")
    keygen.set_defaults(func=_keygen)
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
        ssl_context = server_ssl_context(settings.server.tls) if settings.server.tls is not None else None
    except ConfigError as exc:
        print(f"pdrelay: {exc}", file=sys.stderr)
        return 2
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
    try:
        _run(app, settings, loop, ssl_context)
    except ConfigError as exc:  # e.g. the outbox cannot be read with the configured keys
        print(f"pdrelay: {exc}", file=sys.stderr)
        return 2
    return 0


def _run(
    app: web.Application, settings: Settings, loop: asyncio.AbstractEventLoop, ssl_context: ssl.SSLContext | None
) -> None:
    web.run_app(
        app, host=settings.server.host, port=settings.server.port, print=None,
        access_log=None, shutdown_timeout=10.0, handle_signals=True, loop=loop, ssl_context=ssl_context,
        max_line_size=settings.server.max_header_bytes, max_field_size=settings.server.max_header_bytes,
    )


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
    keyring = st.keyring
    if keyring is None:
        st.log.warning("alert content is stored unencrypted: set security.encryption_key (see `pdrelay keygen`)")
    else:
        st.log.info("stored alert content is encrypted (AES-256-GCM)",
                    extra={"key_ids": list(keyring.ids), "encrypts_with": keyring.primary_id})
    if st.dry_run:
        why = "pagerduty.dry_run is true" if pd.dry_run else "no routing key is configured"
        st.log.warning(f"DRY-RUN: {why}; events are accepted, rendered, stored and logged, but NOT sent")
    server, tls = settings.server, settings.server.tls
    if settings.auth.enabled:
        st.log.info("authentication enabled", extra={
            "auth_methods": Authenticator(settings.auth, settings.security).describe(),  # group → methods
            "open_paths": sorted(OPEN_PATHS),
            "tls": tls is not None, "client_auth": tls.client_auth if tls is not None else "none",
        })
    elif server.allow_unauthenticated and not _is_loopback(server.host):
        st.log.warning(f"no authentication configured: server.allow_unauthenticated is set; anyone who reaches "
                       f"{server.listen} may post alerts and reload rules")
    else:
        st.log.warning(f"no authentication configured: listening on loopback only ({server.listen})")


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _install_sighup(app: web.Application) -> None:
    st = app[STATE]

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, st.rulebook.try_reload, "signal:SIGHUP")


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

    rekey = osub.add_parser("rekey", parents=[common],
                            help="re-encrypt stored values with the first security.encryption_key")
    rekey.set_defaults(func=_outbox_rekey)


def _open_outbox(
    args: argparse.Namespace, settings: Settings | None = None, *, encrypt_plain: bool = False
) -> OutboxAdmin | None:
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
        sealer = Sealer(settings.security.keyring())
        return OutboxAdmin(path, sealer=sealer, encrypt_plain=encrypt_plain)
    except sqlite3.Error as exc:
        print(f"pdrelay: cannot open outbox {path}: {exc}", file=sys.stderr)
        return None
    except ConfigError as exc:
        print(f"pdrelay: {exc}", file=sys.stderr)
        return None


def _outbox_rekey(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return 2
    keyring = settings.security.keyring()
    if keyring is None:
        print("pdrelay: outbox rekey needs security.encryption_key in the config", file=sys.stderr)
        return 2
    admin = _open_outbox(args, settings, encrypt_plain=True)
    if admin is None:
        return 2
    with admin:
        first = admin.encrypted_now
        report = first if first.encrypted_now else admin.rekey()
    with _cli_audit(settings) as audit:
        audit.record("admin.rekey", actor=_cli_actor(), encrypted_now=report.encrypted_now, events=report.events,
                     notifications=report.notifications, states=report.states,
                     key_id=keyring.primary_id)
    if report.encrypted_now:
        print(f"encrypted (the outbox was plain): {report.events} events, {report.notifications} notifications; "
              f"{report.states} state rows indexed")
    else:
        print(f"re-encrypted with the first key: {report.events} events, {report.notifications} notifications")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    print(generate_key())
    return 0


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
        with _cli_audit(settings) as audit:
            try:
                for item_id in ids:
                    outcome = admin.replay(item_id, rules)
                    replayed += outcome.result == "replayed"
                    audit.record("event.replayed", actor=_cli_actor(), item_id=item_id, result=outcome.result,
                                 detail=outcome.detail, rules_sha256=rules.sha256)
                    progress.line(outcome.line())
                    progress.advance()
            finally:
                progress.close()
    return 0 if replayed == len(ids) else 1


@contextlib.contextmanager
def _cli_audit(settings: Settings) -> Iterator[AuditSink]:
    """The audit log the server writes to (the same chain: writers take turns under a file lock)."""
    sink: AuditSink = (
        AuditLog(settings.audit_path, max_bytes=settings.audit.max_size, backups=settings.audit.backups)
        if settings.audit.enabled else NullAudit()
    )
    try:
        yield sink
    finally:
        sink.close()


def _cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid-{os.getuid()}"


def _outbox_purge(args: argparse.Namespace) -> int:
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
    with _cli_audit(settings) as audit:
        audit.record("event.purged", actor=_cli_actor(), purged=purged, requested=len(ids), item_ids=ids[:1000],
                     reason_filter=args.reason, forced=bool(args.force))
    print(f"purged {purged}")
    return 0
