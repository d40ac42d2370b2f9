"""Config loading: defaults, interpolation, secrets from files, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiver.crypto import generate_key
from receiver.errors import ConfigError
from receiver.settings import Secret, load_settings, parse_duration, parse_size, settings_from_mapping


def test_embedded_defaults_are_loopback_and_dry_run() -> None:
    """With no file, pdrelay listens on loopback and runs in dry-run (no routing key)."""
    s = load_settings(None)
    assert s.server.listen == "127.0.0.1:9095"
    assert s.server.body_limit == 10 * 1024 * 1024
    assert s.pagerduty.effective_dry_run is True
    assert s.outbox.path == Path("data/outbox.db")
    assert s.rules.paths == (Path("rules"),)


def test_full_config_with_env_and_file_secrets(tmp_path: Path) -> None:
    """``${ENV}`` is interpolated, ``{file: …}`` secrets are read and trimmed, paths are relative to the file."""
    (tmp_path / "db.key").write_text("filekey0123456789abcdef0123456789\n")
    cfg = tmp_path / "pdrelay.yaml"
    cfg.write_text(
        """
server: {listen: "127.0.0.1:19095", body_limit: 1MiB}
pagerduty:
  events_url: https://events.eu.pagerduty.com/v2/enqueue
  routing_keys:
    default: ${PD_KEY}
    db-oncall: {file: db.key}
  resend_interval: 30m
  retry: {initial_backoff: 500ms, max_backoff: 1m}
  retry_attempts: "${ATTEMPTS:-7}"
outbox: {path: data/o.db}
rules: {paths: [rules/]}
"""
    )
    s = load_settings(cfg, environ={"PD_KEY": "envkey0123456789abcdef0123456789"})
    assert s.server.port == 19095
    assert s.server.body_limit == 1024 * 1024
    assert s.pagerduty.routing_keys["default"].reveal() == "envkey0123456789abcdef0123456789"
    assert s.pagerduty.routing_keys["db-oncall"].reveal() == "filekey0123456789abcdef0123456789"
    assert s.pagerduty.resend_interval == 1800.0
    assert (s.pagerduty.initial_backoff, s.pagerduty.max_backoff) == (0.5, 60.0)
    assert s.pagerduty.retry_attempts == 7
    assert s.pagerduty.effective_dry_run is False
    assert s.outbox.path == tmp_path / "data/o.db"
    assert s.rules.paths == (tmp_path / "rules/",)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"servr": {}},
         "config: servr: unknown key (allowed: audit, auth, cache, outbox, pagerduty, rules, security, server)"),
        ({"server": {"listen": "nope"}}, "config: server.listen: expected HOST:PORT, got 'nope'"),
        ({"server": {"listen": "0.0.0.0:9095"}},
         "config: server.listen: 0.0.0.0:9095 is not a loopback address and no auth is configured; "
         "set server.allow_unauthenticated: true to expose pdrelay without authentication"),
        ({"server": {"body_limit": "lots"}}, "config: server.body_limit: expected a size such as 10MiB, got 'lots'"),
        ({"pagerduty": {"routing_keys": {"default": "${NOPE}"}}},
         "config: pagerduty.routing_keys.default: environment variable NOPE is not set"),
        ({"pagerduty": {"routing_keys": {"default": ""}}}, "config: pagerduty.routing_keys.default: is empty"),
        ({"pagerduty": {"events_url": "https://evil.example/v2/enqueue"}},
         "config: pagerduty.events_url: host 'evil.example' is not in pagerduty.allowed_hosts "
         "(events.pagerduty.com, events.eu.pagerduty.com)"),
        ({"pagerduty": {"events_url": "http://10.0.0.1/x", "allowed_hosts": ["10.0.0.1"]}},
         "config: pagerduty.events_url: plain http is only allowed for loopback hosts, got 'http://10.0.0.1/x'"),
        ({"pagerduty": {"resend_interval": "soon"}},
         "config: pagerduty.resend_interval: expected a duration such as 30s or 5m, got 'soon'"),
        ({"pagerduty": {"retry_attempts": 0}}, "config: pagerduty.retry_attempts: expected an integer ≥ 1, got 0"),
        ({"pagerduty": {"dry_run": "yes"}}, "config: pagerduty.dry_run: expected true or false, got 'yes'"),
        ({"outbox": {"backend": "mongo"}},
         "config: outbox.backend: only 'sqlite' is supported by this version, got 'mongo'"),
        ({"rules": {"paths": []}}, "config: rules.paths: expected a non-empty list of files or folders"),
        ({"pagerduty": {"rate_limit": {"per_key": 0}}},
         "config: pagerduty.rate_limit.per_key: expected an integer ≥ 1, got 0"),
        ({"pagerduty": {"rate_limit": {"per_minute": 5}}},
         "config: pagerduty.rate_limit.per_minute: unknown key (allowed: global, overrides, per_key, window_seconds)"),
        ({"pagerduty": {"rate_limit": {"global": {"window_seconds": 60}}}},
         "config: pagerduty.rate_limit.global.per_key: required (events per window across all keys)"),
        ({"pagerduty": {"circuit_breaker": {"failure_threshold": "often"}}},
         "config: pagerduty.circuit_breaker.failure_threshold: expected an integer ≥ 1, got 'often'"),
        ({"pagerduty": {"circuit_breaker": {"recovery_timeout": "0s"}}},
         "config: pagerduty.circuit_breaker.recovery_timeout: must be positive"),
        ([1, 2], "config: <top level>: expected a mapping, got a list"),
        ({"server": {"max_alerts": 0}}, "config: server.max_alerts: expected an integer ≥ 1, got 0"),
        ({"server": {"max_label_bytes": "huge"}},
         "config: server.max_label_bytes: expected a size such as 10MiB, got 'huge'"),
        ({"server": {"tls": {"key_file": "k.pem"}}}, "config: server.tls.cert_file: required when server.tls is set"),
        ({"security": {"encryption_key": []}},
         "config: security.encryption_key: expected a key or a non-empty list of keys"),
        ({"security": {"encryption_key": "c2hvcnQ="}},
         "config: security.encryption_key[0]: expected base64 of 32 bytes, got 5 bytes"),
        ({"audit": {"backups": 0}}, "config: audit.backups: expected an integer ≥ 1, got 0"),
        ({"audit": {"enabled": "no"}}, "config: audit.enabled: expected true or false, got 'no'"),
        ({"cache": {"redis_url": "redis://127.0.0.1"}},
         "config: cache: this section is not supported by this version of pdrelay"),
    ],
)
def test_invalid_values_are_refused_naming_the_key(data: object, message: str) -> None:
    """Every invalid value is refused with a message naming its key."""
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(data, environ={})
    assert str(info.value) == message


def test_rate_limit_and_breaker_settings() -> None:
    """Per-key budgets, overrides, a global limit and breaker settings are read as written."""
    s = settings_from_mapping({"pagerduty": {
        "rate_limit": {"per_key": 100, "window_seconds": "1m", "overrides": {"aiops": {"per_key": 10000}},
                       "global": {"per_key": 900, "window_seconds": 60}},
        "backoff_on_429": "45s",
        "circuit_breaker": {"failure_threshold": 3, "recovery_timeout": "2m"},
    }}, environ={})
    pd = s.pagerduty
    assert (pd.rate_limit.per_key, pd.rate_limit.window_seconds) == (100, 60.0)
    assert dict(pd.rate_limit.overrides) == {"aiops": (10000, 60.0)}
    assert pd.rate_limit.global_limit == (900, 60.0)
    assert (pd.backoff_on_429, pd.failure_threshold, pd.recovery_timeout) == (45.0, 3, 120.0)


def test_unreadable_secret_file_names_the_key(tmp_path: Path) -> None:
    """A missing secret file is a start-up error naming the key and the path, not the content."""
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"pagerduty": {"routing_keys": {"db": {"file": "missing"}}}},
                              environ={}, base_dir=tmp_path)
    assert str(info.value) == (
        f"config: pagerduty.routing_keys.db.file: cannot read {tmp_path / 'missing'}: No such file or directory"
    )


def test_invalid_yaml_file_is_refused(tmp_path: Path) -> None:
    """A file that is not YAML is refused with its path."""
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("server: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"^config: {cfg}: not valid YAML"):
        load_settings(cfg)


def test_secret_never_shows_itself() -> None:
    """A Secret's repr and str are redacted."""
    s = Secret("abc123")
    assert repr(s) == "Secret('********')"
    assert str(s) == "********"
    assert f"{s}" == "********"
    assert s.reveal() == "abc123"


@pytest.mark.parametrize(
    ("raw", "seconds"), [(30, 30.0), ("500ms", 0.5), ("5m", 300.0), ("4h", 14400.0), ("1.5s", 1.5)]
)
def test_durations(raw: object, seconds: float) -> None:
    """Durations accept plain seconds and unit suffixes."""
    assert parse_duration(raw, "k") == seconds


@pytest.mark.parametrize(("raw", "size"), [(1024, 1024), ("512KiB", 524288), ("10MiB", 10485760), ("1MB", 10**6)])
def test_sizes(raw: object, size: int) -> None:
    """Sizes accept bytes and binary/decimal suffixes."""
    assert parse_size(raw, "k") == size


def test_the_configured_keys_encrypt_the_users_own_values() -> None:
    """The public encrypt/decrypt API, on the keyring the config describes; rotation keeps old tokens readable."""
    old, new = generate_key(), generate_key()
    token = settings_from_mapping({"security": {"encryption_key": old}}, environ={}).security.keyring()
    assert token is not None
    sealed = token.encrypt("db password", context="airflow")
    rotated = settings_from_mapping({"security": {"encryption_key": [new, old]}}, environ={}).security.keyring()
    assert rotated is not None and rotated.decrypt(sealed, context="airflow") == "db password"
    assert rotated.encrypt("x").startswith("pdr1.") and "db password" not in sealed
    assert settings_from_mapping({}, environ={}).security.keyring() is None
