"""Settings for the commands that only read (``outbox list/show``, ``audit verify``, ``check-rules``): the
secrets they never use may be unset.

A deployment names its routing keys and tokens as ``${PD_ROUTING_KEY}``, ``{env: NAME}`` or
``{file: PATH}``, set only where the service runs; an operator inspecting the outbox from a shell has
none of them. Under ``pagerduty.routing_keys``, ``auth`` and ``security.jwt_secret``, a value whose
variable is unset or whose file cannot be read is replaced by a random placeholder before the file is
validated, so everything else is still checked as ``serve`` checks it. The secrets a reader does need,
``security.encryption_key`` (to open encrypted rows) and ``audit.hmac_key`` (to verify the chain), are
read as usual: when one of them is named but unavailable, the command says so and stops.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from receiver.settings import Settings, load_settings, settings_from_mapping

__all__ = ["UNUSED_SECRETS", "load_read_only", "without_unset_secrets"]

UNUSED_SECRETS = (("pagerduty", "routing_keys"), ("auth",), ("security", "jwt_secret"))
"""The parts of the file that hold only secrets a read-only command never uses."""

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


def load_read_only(config: Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """:func:`~receiver.settings.load_settings` for a command that only reads (raises ``ConfigError`` alike)."""
    env = os.environ if environ is None else environ
    if config is None:
        return load_settings(None, env)
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return load_settings(config, env)  # refuses it, in its own words
    base_dir = config.parent
    return settings_from_mapping(without_unset_secrets(data, env, base_dir), environ=env, source=str(config),
                                 base_dir=base_dir)


def without_unset_secrets(data: Any, environ: Mapping[str, str], base_dir: Path) -> Any:
    """``data`` (a parsed config file) with each unavailable value under :data:`UNUSED_SECRETS` replaced."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for path in UNUSED_SECRETS:
        parent = data
        for name in path[:-1]:
            child = parent.get(name)
            if not isinstance(child, dict):
                break
            parent[name] = child = dict(child)
            parent = child
        else:
            if path[-1] in parent:
                parent[path[-1]] = _fill(parent[path[-1]], environ, base_dir)
    return data


def _fill(value: Any, environ: Mapping[str, str], base_dir: Path) -> Any:
    if isinstance(value, str):
        unset = any(m.group(2) is None and m.group(1) not in environ for m in _ENV.finditer(value))
        return _placeholder() if unset else value
    if isinstance(value, dict):
        if set(value) == {"env"} and isinstance(value["env"], str):
            return value if value["env"] in environ else _placeholder()
        if set(value) == {"file"} and isinstance(value["file"], str):
            path = base_dir / value["file"]
            return value if path.is_file() and os.access(path, os.R_OK) else _placeholder()
        return {k: _fill(v, environ, base_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, environ, base_dir) for v in value]
    return value


def _placeholder() -> str:
    """A value nobody knows, long enough for every check a token must pass; it is never sent nor served."""
    return secrets.token_urlsafe(32)
