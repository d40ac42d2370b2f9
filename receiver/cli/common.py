"""What several commands share: the config they read and the rules they load, each error reported on stderr."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Collection, Sequence
from pathlib import Path

from receiver.cli import DEFAULT_CONFIG
from receiver.errors import ConfigError
from receiver.settings import Settings, load_settings
from transforms import RulesError, RuleSet

__all__ = ["load_rules_or_report", "load_settings_or_report"]


def load_settings_or_report(args: argparse.Namespace) -> Settings | None:
    """``--config``, else ``./pdrelay.yaml`` if present, else embedded defaults; ``None`` after reporting an error."""
    config = args.config if args.config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    try:
        return load_settings(config)
    except ConfigError as exc:
        print(f"pdrelay: {exc}", file=sys.stderr)
        return None


def load_rules_or_report(paths: Sequence[Path], routing_keys: Collection[str] = ()) -> RuleSet | None:
    """The rules, checked against the configured ``routing_keys`` names (if any), or ``None`` after
    printing each ``file:line: message`` to stderr."""
    from receiver.rulebook import load_checked

    try:
        return load_checked(paths, routing_keys)
    except RulesError as exc:
        print(str(exc), file=sys.stderr)
        return None
