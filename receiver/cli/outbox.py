"""``pdrelay outbox list/show/replay/purge/rekey``: inspect the SQLite outbox, replay or purge dead letters, re-encrypt.

Read-only commands need no secret; the ones that change the outbox are written to the
audit log the server writes to. Everything stored came from a client or from PagerDuty: it is
printed through :func:`~receiver.cli.common.printable` (plain output) or
:func:`~receiver.cli.common.json_text` (``--json``), never raw.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

from receiver.audit import AuditLog, AuditSink, NullAudit
from receiver.cli.common import json_text, load_rules_or_report, load_settings_or_report, printable
from receiver.clock import SystemClock
from receiver.crypto import Keyring
from receiver.errors import ConfigError, OutboxUnavailable
from receiver.outbox import NoSuchItem, OpenReport, Outbox, OutboxItem, build_outbox
from receiver.settings import Settings

__all__ = ["list_", "purge", "rekey", "replay", "show"]


class CannotOpen(Exception):
    """Already reported on stderr."""


@contextlib.asynccontextmanager
async def opened(settings: Settings, *, encrypt_plain: bool = False) -> AsyncIterator[tuple[Outbox, OpenReport]]:
    """The configured outbox, opened for an operator beside a possibly running server."""
    path = settings.outbox.path
    if settings.outbox.backend == "sqlite" and not path.exists():
        print(f"pdrelay: no outbox at {path}", file=sys.stderr)
        raise CannotOpen
    keyring = Keyring.from_secrets(settings.security.encryption_keys)
    box = build_outbox(settings.outbox.backend, path, keyring=keyring, clock=SystemClock(),
                       keep_sends_for=settings.pagerduty.rate_limit.longest_window, operator=True,
                       encrypt_plain=encrypt_plain, redis=settings.outbox.redis)
    try:
        report = await box.open()
    except (OutboxUnavailable, ConfigError) as exc:
        print(f"pdrelay: {exc}", file=sys.stderr)
        raise CannotOpen from None
    try:
        yield box, report
    finally:
        await box.close()


def _run(settings: Settings | None, work: Callable[[Settings], Coroutine[Any, Any, int]]) -> int:
    """Run an outbox command; 2 when the config or the outbox cannot be opened."""
    if settings is None:
        return 2
    try:
        code: int = asyncio.run(work(settings))
    except CannotOpen:
        return 2
    return code


def _to_json(it: OutboxItem, now: float, *, with_body: bool = True) -> dict[str, Any]:
    """An item as the CLI prints it in JSON (``state`` rather than ``status``)."""
    out: dict[str, Any] = {
        "id": it.id, "state": it.status, "routing_key": it.routing_key, "action": it.action,
        "dedup_key": it.dedup_key, "attempts": it.attempts, "reason": it.reason,
        "last_status": it.last_status, "last_error": it.last_error, "rules": list(it.rules),
        "created_at": it.created_at, "next_attempt_at": it.next_attempt_at,
        "age_seconds": round(max(0.0, now - it.created_at), 3),
    }
    if with_body:
        out["body"] = it.body
    return out


def rekey(args: argparse.Namespace) -> int:
    settings = load_settings_or_report(args)
    if settings is None:
        return 2
    keyring = Keyring.from_secrets(settings.security.encryption_keys)
    if keyring is None:
        print("pdrelay: outbox rekey needs security.encryption_key in the config", file=sys.stderr)
        return 2

    async def work(settings: Settings) -> OpenReport:
        async with opened(settings, encrypt_plain=True) as (box, first):
            return first if first.encrypted_now else await box.rekey()

    try:
        report = asyncio.run(work(settings))
    except CannotOpen:
        return 2
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


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def list_(args: argparse.Namespace) -> int:
    async def work(settings: Settings) -> int:
        async with opened(settings) as (box, _):
            items = await box.items(status=args.state, routing_key=args.routing_key, reason=args.reason,
                                    limit=args.limit)
        _print_list(args, items)
        return 0

    return _run(load_settings_or_report(args, read_only=True), work)


def _print_list(args: argparse.Namespace, items: list[OutboxItem]) -> None:
    now = SystemClock().now()
    if args.json:
        for it in items:
            print(json_text(_to_json(it, now, with_body=False)))
        return
    header = ("ID", "STATE", "ROUTING_KEY", "ACTION", "DEDUP_KEY", "ATTEMPTS", "REASON", "AGE", "LAST_STATUS")
    rows = [header] + [
        (str(it.id), printable(it.status), printable(it.routing_key), printable(it.action), printable(it.dedup_key),
         str(it.attempts), printable(it.reason or "-"), _age(now - it.created_at),
         "-" if it.last_status is None else str(it.last_status))
        for it in items
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def show(args: argparse.Namespace) -> int:
    async def work(settings: Settings) -> int:
        async with opened(settings) as (box, _):
            try:
                it = await box.get(args.id)
            except NoSuchItem as exc:
                print(f"pdrelay: {exc}", file=sys.stderr)
                return 1
        _print_item(args, it)
        return 0

    return _run(load_settings_or_report(args, read_only=True), work)


def _print_item(args: argparse.Namespace, it: OutboxItem) -> None:
    now = SystemClock().now()
    if args.json:
        print(json_text(_to_json(it, now), indent=2))
        return
    fields: list[tuple[str, str]] = [
        ("id", str(it.id)), ("state", it.status), ("routing_key", it.routing_key), ("action", it.action),
        ("dedup_key", it.dedup_key), ("attempts", str(it.attempts)), ("reason", it.reason or "-"),
        ("last_status", "-" if it.last_status is None else str(it.last_status)),
        ("last_error", it.last_error or "-"), ("rules", ", ".join(it.rules) or "-"),
        ("created", f"{_when(it.created_at)} ({_age(now - it.created_at)} ago)"),
        ("next_attempt", _when(it.next_attempt_at) if it.status == "queued" else "-"),
    ]
    for name, value in fields:
        print(f"{name + ':':<14}{printable(value)}")
    print("body:")
    print(json_text(it.body, indent=2))


async def _selected(box: Outbox, ids: list[int]) -> list[OutboxItem] | None:
    """The items with these ids, or ``None`` after naming the first unknown one."""
    try:
        return [await box.get(i) for i in dict.fromkeys(ids)]
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


def replay(args: argparse.Namespace) -> int:
    """Re-render dead letters with the current rules (routing key included) and requeue them; exit 1 naming
    every item that could not be (still invalid, not produced, an unconfigured routing key name, …)."""
    from receiver.replay import replay as replay_one

    settings = load_settings_or_report(args)
    if settings is None:
        return 2
    rules = load_rules_or_report(settings.rules.paths, set(settings.pagerduty.routing_keys),
                                 settings.rules.allow_plugins)
    if rules is None:
        return 2
    pd = settings.pagerduty

    async def work(settings: Settings) -> int:
        async with opened(settings) as (box, _):
            if args.ids:
                chosen = await _selected(box, args.ids)
                if chosen is None:
                    return 1
                ids = [it.id for it in chosen]
            else:
                ids = [it.id for it in await box.items(status="dead", reason=args.reason)]
            progress = _Progress(len(ids), "replay")
            failed = []
            with _cli_audit(settings) as audit:
                try:
                    for item_id in ids:
                        outcome = await replay_one(box, item_id, rules, routing_keys=set(pd.routing_keys),
                                                   resend_interval=pd.resend_interval)
                        if not outcome.settled:
                            failed.append(item_id)
                        audit.record("event.replayed", actor=_cli_actor(), item_id=item_id, result=outcome.result,
                                     detail=outcome.detail, queued_as=list(outcome.ids),
                                     routing_key=outcome.routing_key or None, rules_sha256=rules.sha256)
                        progress.line(printable(outcome.line()))
                        progress.advance()
                finally:
                    progress.close()
            if failed:
                print(f"pdrelay: {len(failed)} item(s) not requeued: {', '.join(map(str, failed))}", file=sys.stderr)
            return 1 if failed else 0

    return _run(settings, work)


@contextlib.contextmanager
def _cli_audit(settings: Settings) -> Iterator[AuditSink]:
    """The audit log the server writes to (the same chain: writers take turns under a file lock)."""
    sink: AuditSink = (
        AuditLog(settings.audit_path, max_bytes=settings.audit.max_size, backups=settings.audit.backups,
                 hmac_key=settings.audit.hmac_key)
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


def purge(args: argparse.Namespace) -> int:
    settings = load_settings_or_report(args)
    if settings is None:
        return 2

    async def work(settings: Settings) -> int:
        async with opened(settings) as (box, _):
            if args.ids:
                chosen = await _selected(box, args.ids)
                if chosen is None:
                    return 1
                queued = [str(it.id) for it in chosen if it.status == "queued"]
                if queued and not args.force:
                    print(f"pdrelay: refusing to purge queued item(s) {', '.join(queued)} without --force",
                          file=sys.stderr)
                    return 1
                ids = [it.id for it in chosen]
            else:
                ids = [it.id for it in await box.items(status="dead", reason=args.reason)]
            if ids and not args.yes:
                if not sys.stdin.isatty():
                    print(f"pdrelay: refusing to purge {len(ids)} item(s) without --yes: stdin is not a terminal",
                          file=sys.stderr)
                    return 1
                answer = input(f"purge {len(ids)} item(s)? [y/N] ")
                if answer.strip().lower() not in ("y", "yes"):
                    print("pdrelay: nothing purged", file=sys.stderr)
                    return 1
            purged = await box.purge(ids, include_queued=bool(args.ids) and args.force)
        with _cli_audit(settings) as audit:
            audit.record("event.purged", actor=_cli_actor(), purged=purged, requested=len(ids), item_ids=ids[:1000],
                         reason_filter=args.reason, forced=bool(args.force))
        print(f"purged {purged}")
        return 0

    return _run(settings, work)
