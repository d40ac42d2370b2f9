"""The ``pdrelay`` command line: the argument parser and a lazy dispatch to one module per command group.

``serve`` (:mod:`receiver.cli.serve`), ``check-rules`` and ``test-rules`` (:mod:`receiver.cli.rules`),
``outbox list/show/replay/purge/rekey`` (:mod:`receiver.cli.outbox`), ``keygen`` (:mod:`receiver.cli.keys`),
``audit verify`` (:mod:`receiver.cli.audit`), ``send`` (:mod:`receiver.cli.send`),
``completion`` (:mod:`receiver.cli.completion`).

This module imports only the standard library. Each command names its function as
``"module:function"``, and the module is imported only when that command runs, so
``pdrelay --help`` and ``pdrelay keygen`` never load aiohttp, uvloop, the outbox or the rules.

Every command runs under the umask :data:`UMASK`: whatever it creates first (the data directory,
the outbox and its ``-wal`` and ``-shm`` files, the audit log) is readable by its owner only.
"""

from __future__ import annotations

import argparse
import os
import pkgutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["BROKEN_PIPE", "DEFAULT_CONFIG", "UMASK", "main"]

DEFAULT_CONFIG = Path("pdrelay.yaml")
UMASK = 0o077
"""Directories 0700 and files 0600, whichever part of pdrelay (or SQLite) creates them."""

BROKEN_PIPE = 128 + 13
"""The exit status when the output pipe closes early: what a shell reports for a process SIGPIPE ended."""

Command = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    os.umask(UMASK)
    parser = _parser()
    args = parser.parse_args(argv)
    command: Command = pkgutil.resolve_name(args.command)
    try:
        status = command(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``pdrelay … | head -1``): end quietly with the status a shell reports for a
        # process that SIGPIPE ended, as git does. stdout now points at /dev/null so that the interpreter's
        # own flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE
    return status


class _Version(argparse.Action):
    """``--version``: print the installed package's version and exit 0 (looked up only when asked)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from importlib.metadata import version

        print(f"pdrelay {version('pdrelay')}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pdrelay", description="Alertmanager → PagerDuty, durably.")
    p.add_argument("--version", action=_Version, help="print the installed version and exit")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the sidecar")
    serve.add_argument("--config", type=Path, help=f"config file (default: ./{DEFAULT_CONFIG} if present)")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                       metavar="LEVEL", help="one of %(choices)s (default %(default)s)")
    serve.add_argument("--listen", metavar="HOST:PORT", help="instead of server.listen; port 0: any free port")
    serve.add_argument("--port-file", type=Path, metavar="PATH", help="once listening, write the bound port to PATH")
    serve.set_defaults(command="receiver.cli.serve:serve")

    check = sub.add_parser("check-rules", help="validate rule files; exit 1 with file:line: message on error")
    check.add_argument("--config", type=Path, help="also check the routing key names against this config")
    check.add_argument("paths", nargs="+", type=Path)
    check.set_defaults(command="receiver.cli.rules:check_rules")

    test = sub.add_parser(
        "test-rules", help="print the PagerDuty events bodies would produce; sends nothing",
        description="Print, as JSON, the PagerDuty events the bodies would produce and the rules that fired. "
        "Templates that fail while rendering are listed on stderr (<fingerprint> <rule>.<field>: <message>) "
        "and make the exit status 1.")
    test.add_argument("--rules", type=Path, action="append", required=True, help="rule file or folder")
    test.add_argument("--trace", action="store_true",
                      help="add each alert's steps: matched or not (and why not), and what each changed")
    test.add_argument("--now", metavar="RFC3339",
                      help="the time when_time/unless_time steps test, e.g. 2026-03-29T07:30:00Z (default: now)")
    test.add_argument("--text", action="store_true",
                      help="print lines for a terminal instead of JSON (with --trace: one line per step)")
    test.add_argument("--allow-template-errors", action="store_true",
                      help="template errors are warnings: exit 0 with them")
    test.add_argument("bodies", nargs="+", type=Path, help="Alertmanager webhook JSON files")
    test.set_defaults(command="receiver.cli.rules:test_rules")

    _outbox_parser(sub)

    audit = sub.add_parser("audit", help="the tamper-evident audit log")
    asub = audit.add_subparsers(required=True, metavar="ACTION")
    verify = asub.add_parser("verify", help="check the hash chain of one or more audit files (rotated ones too)")
    verify.add_argument("files", nargs="*", metavar="FILE",
                        help="default with --config: audit.path and its rotated files")
    verify.add_argument("--head", metavar="HEAD", help="the head kept outside the file (pdrelay_audit_head_info)")
    verify.add_argument("--key-file", type=Path, metavar="FILE", help="the chain's HMAC key (audit.hmac_key)")
    verify.add_argument("--config", type=Path, metavar="FILE", help="read audit.hmac_key (and audit.path) from it")
    verify.set_defaults(command="receiver.cli.audit:verify")

    _send_parser(sub)

    keygen = sub.add_parser("keygen", help="print a new 256-bit encryption key (base64) for security.encryption_key")
    keygen.set_defaults(command="receiver.cli.keys:keygen")

    completion = sub.add_parser("completion", help="print a shell completion script (bash or zsh)")
    completion.add_argument("shell", choices=["bash", "zsh"], help="one of %(choices)s")
    completion.set_defaults(command="receiver.cli.completion:completion")
    return p


def _send_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    send = sub.add_parser(
        "send", help="send one event through a running pdrelay's /v1/events; prints its dedup_key",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 accepted (the dedup_key is printed); 1 refused by pdrelay (invalid event, or the "
        "token may not send events);\n2 bad command line or token file; 3 pdrelay not reached or cannot store "
        "the event now (try again later)")
    send.add_argument("--url", default="http://127.0.0.1:9095", help="pdrelay's base URL (default %(default)s)")
    send.add_argument("--routing-key", required=True, metavar="NAME",
                      help="routing key name (as in pdrelay's pagerduty.routing_keys)")
    send.add_argument("--action", default="trigger", choices=["trigger", "resolve", "change"], metavar="ACTION",
                      help="one of %(choices)s (default %(default)s)")
    send.add_argument("--summary", help="payload.summary (trigger, change)")
    send.add_argument("--source", help="payload.source (trigger; optional for change)")
    send.add_argument("--severity", choices=["critical", "error", "warning", "info"], metavar="SEVERITY",
                      help="payload.severity (trigger): one of %(choices)s")
    send.add_argument("--dedup-key", metavar="KEY", help="required to resolve; a trigger without one gets one")
    send.add_argument("--token-file", type=Path, metavar="FILE", help="bearer token for pdrelay, one line")
    send.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                      help="for pdrelay's answer (default %(default)s)")
    send.set_defaults(command="receiver.cli.send:send")


def _outbox_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from receiver.errors import Reason  # the standard library's enum only

    _REASON: dict[str, Any] = {"choices": [r.value for r in Reason], "metavar": "REASON"}
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, metavar="FILE",
                        help=f"config file (default: ./{DEFAULT_CONFIG} if present)")
    outbox = sub.add_parser("outbox", help="inspect the queue and the dead letters; replay after a fix")
    osub = outbox.add_subparsers(required=True, metavar="ACTION")

    ls = osub.add_parser("list", parents=[common], help="list stored events, oldest first")
    ls.add_argument("--state", choices=["queued", "dead"], metavar="STATE", help="one of %(choices)s")
    ls.add_argument("--routing-key", metavar="NAME", help="routing key name (as in pagerduty.routing_keys)")
    ls.add_argument("--reason", **_REASON, help="failure reason, one of %(choices)s")
    ls.add_argument("--limit", type=int, default=100, metavar="N", help="at most N items (default 100)")
    ls.add_argument("--json", action="store_true", help="one JSON object a line")
    ls.set_defaults(command="receiver.cli.outbox:list_")

    show = osub.add_parser("show", parents=[common], help="one stored event in full")
    show.add_argument("id", type=int, metavar="ID")
    show.add_argument("--json", action="store_true")
    show.set_defaults(command="receiver.cli.outbox:show")

    replay = osub.add_parser("replay", parents=[common],
                             help="re-render dead events with the current rules and queue them again")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", type=int, default=[], metavar="ID")
    which.add_argument("--all", action="store_true", help="every dead event")
    which.add_argument("--reason", **_REASON, help="every dead event with this reason: %(choices)s")
    replay.set_defaults(command="receiver.cli.outbox:replay")

    purge = osub.add_parser("purge", parents=[common], help="delete stored events and release their notifications")
    what = purge.add_mutually_exclusive_group(required=True)
    what.add_argument("ids", nargs="*", type=int, default=[], metavar="ID")
    what.add_argument("--dead", action="store_true", help="every dead event")
    what.add_argument("--reason", **_REASON, help="every dead event with this reason: %(choices)s")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge.add_argument("--force", action="store_true", help="also purge queued events given by ID")
    purge.set_defaults(command="receiver.cli.outbox:purge")

    rekey = osub.add_parser("rekey", parents=[common],
                            help="re-encrypt stored values with the first security.encryption_key")
    rekey.set_defaults(command="receiver.cli.outbox:rekey")
