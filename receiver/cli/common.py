"""What several commands share: the config they read and the rules they load, each error reported on stderr,
and the escaping of text a client sent before it reaches the operator's terminal.

Alert data (fingerprints, labels, summaries, dedup keys, PagerDuty's error text, receiver names)
is hostile: an ESC or BEL in it would drive the terminal that prints it (clear it, retitle it,
hide text). :func:`printable` shows such characters as escapes (``\\x1b``, ``\\n``, ``\\u202e``) in
plain output; :func:`json_text` does the same for JSON output, whose ``json.dumps(…,
ensure_ascii=False)`` escapes only the C0 controls and leaves DEL, the C1 controls (CSI among
them) and the bidirectional overrides raw.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Collection, Sequence
from pathlib import Path

from receiver.cli import DEFAULT_CONFIG
from receiver.errors import ConfigError
from receiver.settings import Settings, load_settings
from transforms import RulesError, RuleSet

__all__ = ["json_text", "load_rules_or_report", "load_settings_or_report", "printable"]

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with every character that is not printable shown as an escape, and ``\\`` doubled.

    Printable is :meth:`str.isprintable` plus the space: letters, marks, digits, punctuation and
    symbols of any script stay as they are; control characters, format characters (the
    bidirectional overrides), separators other than the space, surrogates and unassigned code
    points become ``\\n``, ``\\r``, ``\\t``, ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``.
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_SHORT.get(ch) or (ch if ch.isprintable() else _escape(ch)) for ch in text)


def json_text(value: object, *, indent: int | None = None) -> str:
    """``value`` as JSON (keys sorted, non-ASCII text kept) in which every character that is not
    printable is a ``\\uNNNN`` escape; the newlines of ``indent`` are the only raw ones."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, indent=indent)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == "\n" else _json_escape(ch) for ch in text)


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def load_settings_or_report(args: argparse.Namespace, *, read_only: bool = False) -> Settings | None:
    """``--config``, else ``./pdrelay.yaml`` if present, else embedded defaults; ``None`` after reporting an error.

    ``read_only``: the routing keys and tokens may be unset (:data:`~receiver.settings.UNUSED_BY_READERS`)."""
    config = args.config if args.config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    try:
        return load_settings(config, secrets_may_be_unset=read_only)
    except ConfigError as exc:
        print(f"pdrelay: {exc}", file=sys.stderr)
        return None


def load_rules_or_report(
    paths: Sequence[Path], routing_keys: Collection[str] = (), allow_plugins: Sequence[str] = ()
) -> RuleSet | None:
    """The rules, checked against the configured ``routing_keys`` names (if any) and ``allow_plugins``
    (none: no ``module:callable`` plugin loads), or ``None`` after printing each ``file:line: message``
    to stderr."""
    from receiver.rulebook import load_checked

    try:
        return load_checked(paths, routing_keys, allow_plugins)
    except RulesError as exc:
        print(str(exc), file=sys.stderr)
        return None
