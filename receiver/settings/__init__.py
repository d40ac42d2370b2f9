"""Configuration: ``pdrelay.yaml`` → frozen, validated :class:`Settings`.

Every string value may use ``${ENV_VAR}`` (or ``${ENV_VAR:-fallback}``); every secret
may also be given as ``{file: PATH}`` or ``{env: NAME}``. Secrets are held in
:class:`~receiver.secret.Secret`, whose ``repr``/``str`` never show the value. An invalid
file is refused with a :class:`~receiver.errors.ConfigError` whose message names the key,
e.g. ``config: pagerduty.rate_limit.per_key: expected an integer ≥ 1, got 'x'``.

With no file, :func:`load_settings` returns the embedded defaults: loopback listener,
SQLite outbox under ``./data``, rules from ``rules/``, no routing key — so pdrelay runs
in dry-run and says so.

The package, in the order a file goes through it: :mod:`~receiver.settings.schema` declares
what the file may say (with the value types of :mod:`~receiver.settings.values`),
:mod:`~receiver.settings.read` reads it as those types (``${ENV}``, secrets, paths, and the
wording of every error), :mod:`~receiver.settings.convert` turns each part into its
settings value, and :mod:`~receiver.settings.checks` puts the sections together and checks
what spans several keys, into the classes of :mod:`~receiver.settings.model`, which hold
every default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from receiver.errors import ConfigError
from receiver.settings.checks import build
from receiver.settings.model import (
    AUTH_METHODS,
    ENDPOINT_GROUPS,
    AuditSettings,
    AuthSettings,
    BasicCredential,
    JWTSettings,
    MTLSSettings,
    OutboxSettings,
    PagerDutySettings,
    RedisSettings,
    RulesSettings,
    SecuritySettings,
    ServerSettings,
    Settings,
    TLSSettings,
)
from receiver.settings.read import Reader
from receiver.settings.schema import ConfigFile
from receiver.settings.values import parse_duration, parse_size

__all__ = [
    "AUTH_METHODS",
    "ENDPOINT_GROUPS",
    "AuditSettings",
    "AuthSettings",
    "BasicCredential",
    "JWTSettings",
    "MTLSSettings",
    "OutboxSettings",
    "PagerDutySettings",
    "RedisSettings",
    "RulesSettings",
    "SecuritySettings",
    "UNUSED_BY_READERS",
    "ServerSettings",
    "Settings",
    "TLSSettings",
    "default_rules_path",
    "load_settings",
    "parse_duration",
    "parse_size",
    "settings_from_mapping",
]


UNUSED_BY_READERS = ("pagerduty.routing_keys", "auth", "security.jwt_secret")
"""The secrets that commands which only read (``outbox list/show``, ``audit verify``, ``check-rules``,
``test-rules``) never use: with ``secrets_may_be_unset``, an unset one is read as a placeholder. The
secrets a reader does need (``security.encryption_key``, ``audit.hmac_key``) are still required."""


def load_settings(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None, *,
                  secrets_may_be_unset: bool = False) -> Settings:
    """Read and validate a config file; ``None`` gives the embedded defaults. ``secrets_may_be_unset``: the
    secrets of :data:`UNUSED_BY_READERS` whose variable is unset or whose file cannot be read get a random
    placeholder (which is never sent nor served) instead of refusing the file."""
    if path is None:
        return Settings(rules=RulesSettings(paths=(default_rules_path(),)))
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config: cannot read {p}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: {p}: not valid YAML: {exc}") from exc
    return settings_from_mapping(data, environ=environ, source=str(p), base_dir=p.parent,
                                 unset_ok=UNUSED_BY_READERS if secrets_may_be_unset else ())


def default_rules_path() -> Path:
    """``./rules`` when it exists (a checkout), else the example rules shipped in the package."""
    local = Path("rules")
    return local if local.is_dir() else Path(__file__).parent.parent / "defaults" / "rules.yaml"


def settings_from_mapping(
    data: Any,
    *,
    environ: Mapping[str, str] | None = None,
    source: str = "<mapping>",
    base_dir: Path | None = None,
    unset_ok: tuple[str, ...] = (),
) -> Settings:
    """Validate an already-parsed config mapping (``None``: an empty file)."""
    reader = Reader(os.environ if environ is None else environ, base_dir or Path.cwd(), unset_ok)
    file: ConfigFile = reader.read({} if data is None else data, ConfigFile, "")
    return build(file, source)
