"""``pdrelay audit verify``: check the audit log's hash chain, with its key and the head kept outside it.

The files are the ones given, or with ``--config`` and none given, ``audit.path`` and its rotated
files. The key is read from ``--key-file`` (the file's text, surrounding whitespace stripped),
else from the ``audit.hmac_key`` of ``--config``. The head is ``--head``, else, with ``--config``,
the one the server keeps in its outbox (so a log cut short at its end fails without the operator
having noted anything). A SQLite outbox is read if its file exists. A Redis outbox keeps one head per
replica, named by the replica's host name: the head read is this host's, so run the command where the
replica runs (its pod or sidecar container), against the audit files that replica wrote; elsewhere,
give ``--head``. A Redis that cannot be reached is an error (exit 2), not a silent check without head.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from receiver.audit import verify_main
from receiver.cli.common import load_settings_or_report
from receiver.cli.outbox import CannotOpen, opened
from receiver.settings import Settings

__all__ = ["verify"]


def verify(args: argparse.Namespace) -> int:
    files: list[str] = list(args.files)
    key: bytes | None = None
    head: str | None = args.head
    if args.config is not None:
        settings = load_settings_or_report(args, read_only=True)
        if settings is None:
            return 2
        if head is None and (settings.outbox.backend == "redis" or settings.outbox.path.exists()):
            try:
                head = asyncio.run(_kept_head(settings))
            except CannotOpen:
                return 2
        if settings.audit.hmac_key is not None:
            key = settings.audit.hmac_key.reveal().encode("utf-8")
        if not files:
            files = [str(p) for p in _with_rotated(settings.audit_path)]
    if args.key_file is not None:
        try:
            text = Path(args.key_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            print(f"audit verify: cannot read the key file {args.key_file}: {why}", file=sys.stderr)
            return 2
        if not text:
            print(f"audit verify: the key file {args.key_file} is empty", file=sys.stderr)
            return 2
        key = text.encode("utf-8")
    return verify_main(files, sys.stdout, sys.stderr, key=key, head=head)


async def _kept_head(settings: Settings) -> str | None:
    async with opened(settings) as (box, _):
        return await box.audit_head()


def _with_rotated(path: Path) -> list[Path]:
    """``path`` and the ``path.N`` files next to it (the order does not matter to verify)."""
    prefix = path.name + "."
    try:
        rotated = [p for p in path.parent.iterdir() if p.name.startswith(prefix) and p.name[len(prefix):].isdigit()]
    except OSError:
        rotated = []  # verify says what is wrong with path itself
    return [*rotated, path]
