"""Config loading: defaults, interpolation, secrets from files, and errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_type_hints, is_typeddict

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from receiver.crypto import Keyring, generate_key
from receiver.errors import ConfigError
from receiver.limiter import RateLimit
from receiver.secret import Secret
from receiver.settings import (
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
    load_settings,
    parse_duration,
    parse_size,
    settings_from_mapping,
)
from receiver.settings.schema import ConfigFile, EndpointsFile


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
         "config: outbox.backend: expected sqlite or redis, got 'mongo'"),
        ({"outbox": {"redis_url": "redis://127.0.0.1:6379"}},
         "config: outbox.redis_url: unknown key (allowed: backend, path, redis)"),
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
        ({"audit": {"hmac_key": "short"}}, "config: audit.hmac_key: a token needs at least 16 characters"),
        ({"server": {"max_labels": 0}}, "config: server.max_labels: expected an integer ≥ 1, got 0"),
        ({"server": {"max_concurrent_intake": -1}},
         "config: server.max_concurrent_intake: expected an integer ≥ 1, got -1"),
        ({"server": {"header_timeout": "0s"}}, "config: server.header_timeout: must be positive"),
        ({"server": {"body_timeout": "slow"}},
         "config: server.body_timeout: expected a duration such as 30s or 5m, got 'slow'"),
        ({"rules": {"allow_plugins": ["os; rm -rf /"]}},
         "config: rules.allow_plugins: expected a dotted module name such as acme_pdrelay, got 'os; rm -rf /'"),
        ({"auth": {"jwt": {"audience": "pdrelay", "issuer": "idp", "scopes": {"admin": "pdrelay admin"}}},
          "security": {"jwt_secret": "j" * 32}},
         "config: auth.jwt.scopes.admin: expected one scope word, got 'pdrelay admin'"),
        ({"auth": {"jwt": {"audience": "pdrelay", "issuer": "idp", "scopes": {"root": "x"}}},
          "security": {"jwt_secret": "j" * 32}},
         "config: auth.jwt.scopes.root: unknown key (allowed: admin, events, intake)"),
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

    def keyring(data: dict[str, object]) -> Keyring | None:
        return Keyring.from_secrets(settings_from_mapping(data, environ={}).security.encryption_keys)

    token = keyring({"security": {"encryption_key": old}})
    assert token is not None
    sealed = token.encrypt("db password", context="airflow")
    rotated = keyring({"security": {"encryption_key": [new, old]}})
    assert rotated is not None and rotated.decrypt(sealed, context="airflow") == "db password"
    assert rotated.encrypt("x").startswith("pdr1.") and "db password" not in sealed
    assert keyring({}) is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"server": {"listen": None}}, "config: server.listen: expected a string, got nothing"),
        ({"pagerduty": {"retry_attempts": None}},
         "config: pagerduty.retry_attempts: expected an integer ≥ 1, got None"),
        ({"pagerduty": {"routing_keys": {"default": None}}},
         "config: pagerduty.routing_keys.default: expected a string, got nothing"),
        ({"rules": {"paths": None}}, "config: rules.paths: expected a non-empty list of files or folders"),
        ({"auth": {"basic": {"username": None, "password": "pw"}}},
         "config: auth.basic.username: expected a string, got nothing"),
    ],
)
def test_null_is_refused_where_a_value_is_needed(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(data, environ={})
    assert str(info.value) == message


def test_null_is_left_out_for_sections_lists_and_optional_secrets() -> None:
    """An empty section, list or optional secret (``key:`` with nothing after it) is the same as no key."""
    s = settings_from_mapping({
        "server": None,
        "pagerduty": {"routing_keys": None, "retry": None, "rate_limit": {"overrides": {"bulk": None}, "global": None}},
        "auth": {"bearer_tokens": None, "bearer_tokens_file": None, "basic": None, "jwt": None, "mtls": None},
        "security": {"encryption_key": None, "jwt_secret": None},
        "cache": None,
    }, environ={})
    assert s == Settings(pagerduty=PagerDutySettings(rate_limit=RateLimit(overrides={"bulk": (120, 60.0)})),
                         source="<mapping>")


def _sections_in(declared: Any) -> Iterator[Any]:
    """Every TypedDict a declared type reads, through Annotated, Required, unions, lists, mappings and From."""
    if is_typeddict(declared):
        yield declared
        return
    for arg in (*get_args(declared), *getattr(declared, "__metadata__", ())):
        yield from _sections_in(getattr(arg, "source", arg))


def _declared_keys(section: Any, prefix: str = "") -> set[str]:
    keys = set()
    for name, declared in get_type_hints(section, include_extras=True).items():
        keys.add(prefix + name)
        for nested in _sections_in(declared):
            keys |= _declared_keys(nested, f"{prefix}{name}.")
    return keys


def _given_keys(value: Any, prefix: str = "", named: bool = False) -> set[str]:
    """The dotted keys of a config; the names under ``routing_keys`` and ``overrides`` are left out."""
    if isinstance(value, list):
        return set().union(*(_given_keys(v, prefix) for v in value))
    if not isinstance(value, dict):
        return set()
    if named:
        return set().union(*(_given_keys(v, prefix) for v in value.values()))
    keys = set()
    for name, v in value.items():
        keys |= {prefix + name} | _given_keys(v, f"{prefix}{name}.", named=name in ("routing_keys", "overrides"))
    return keys


def test_every_declared_key_is_read_where_the_settings_say(tmp_path: Path) -> None:
    """A file that gives every key the schema declares loads into exactly the settings it describes."""
    public = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "issuer.pub").write_bytes(public)
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (tmp_path / name).write_text("read when serving, not when loading\n")
    tokens = {name: name * 16 for name in ("b", "c", "d", "e")}
    (tmp_path / "bearer").write_text(f"# one a line\n{tokens['c']}\n")
    (tmp_path / "admin").write_text(f"{tokens['e']}\n")
    (tmp_path / "pw").write_text("hunter2\n")
    key_a, key_b = generate_key(), generate_key()
    data = {
        "server": {"listen": "0.0.0.0:9443", "body_limit": "2MiB", "allow_unauthenticated": False,
                   "tls": {"cert_file": "cert.pem", "key_file": "key.pem", "client_ca_file": "ca.pem",
                           "client_auth": "optional"},
                   "max_header_bytes": "16KiB", "max_alerts": 500, "max_label_bytes": "2KiB",
                   "max_annotation_bytes": "64KiB", "max_labels": 64, "max_concurrent_intake": 2,
                   "header_timeout": "5s", "body_timeout": "20s"},
        "pagerduty": {"events_url": "https://events.eu.pagerduty.com/v2/enqueue",
                      "allowed_hosts": ["Events.EU.pagerduty.com"], "routing_keys": {"default": "${PD_KEY}"},
                      "dry_run": True, "api_timeout": "5s", "connect_timeout": "2s", "retry_attempts": "${ATTEMPTS}",
                      "max_age": "1h", "retry": {"initial_backoff": "2s", "max_backoff": "1m"}, "resend_interval": "2h",
                      "concurrency": 4, "backoff_on_429": "10s", "settle_delay": "30s",
                      "skip_superseded_triggers": "${SKIP}",
                      "rate_limit": {"per_key": 60, "window_seconds": 30,
                                     "overrides": {"bulk": {"per_key": 600, "window_seconds": "1m"},
                                                   "slow": {"per_key": 1}},
                                     "global": {"per_key": 900, "window_seconds": "2m"}},
                      "circuit_breaker": {"failure_threshold": 3, "recovery_timeout": "90s"}, "api_token": None},
        "outbox": {"backend": "sqlite", "path": "data/o.db",
                   "redis": {"url": "rediss://cache:6380/1", "key_prefix": "pd", "sentinels": None,
                             "service_name": None, "username": "pd", "password": "${REDIS_PW}", "wait_replicas": 1,
                             "wait_timeout": "2s", "lease": "45s", "socket_timeout": "3s"}},
        "rules": {"paths": "rules/", "watch": True, "allow_plugins": ["acme_pdrelay", "ops.tools"]},
        "auth": {"bearer_tokens": tokens["b"], "bearer_tokens_file": "bearer",
                 "basic": [{"username": "am", "password_file": "pw"}, {"username": "ops", "password": "s3cret"}],
                 "jwt": {"algorithms": "ES256", "audience": "pdrelay", "issuer": "idp", "public_key_file": "issuer.pub",
                         "leeway": "10s", "scope_claim": "scp",
                         "scopes": {"intake": "pdrelay:intake", "events": "ev", "admin": "pdrelay/admin"}},
                 "mtls": {"subjects": "alertmanager", "admin_subjects": ["ops"]},
                 "admin_tokens": [tokens["d"]], "admin_tokens_file": "admin",
                 "endpoints": {"intake": ["mtls", "bearer", "mtls"], "events": "jwt", "admin": ["admin_token"]}},
        "security": {"encryption_key": [key_a, "${OLD_KEY}"], "jwt_secret": "${JWT_SECRET}"},
        "audit": {"path": "audit/log.jsonl", "enabled": False, "max_size": "1MiB", "backups": 3,
                  "hmac_key": "${AUDIT_KEY}"},
        "cache": {},
    }
    assert _given_keys(data) == _declared_keys(ConfigFile)  # this test keeps up with the schema
    environ = {"PD_KEY": "r" * 32, "ATTEMPTS": "3", "SKIP": "true", "OLD_KEY": key_b, "JWT_SECRET": "j" * 32,
               "AUDIT_KEY": "a" * 32, "REDIS_PW": "p" * 20}
    s = settings_from_mapping(data, environ=environ, source="kitchen.yaml", base_dir=tmp_path)
    assert s == Settings(
        server=ServerSettings(
            host="0.0.0.0", port=9443, body_limit=2 * 1024**2, allow_unauthenticated=False,
            tls=TLSSettings(cert_file=tmp_path / "cert.pem", key_file=tmp_path / "key.pem",
                            client_ca_file=tmp_path / "ca.pem", client_auth="optional"),
            max_header_bytes=16 * 1024, max_alerts=500, max_label_bytes=2 * 1024, max_annotation_bytes=64 * 1024,
            max_labels=64, max_concurrent_intake=2, header_timeout=5.0, body_timeout=20.0),
        pagerduty=PagerDutySettings(
            events_url="https://events.eu.pagerduty.com/v2/enqueue", allowed_hosts=("events.eu.pagerduty.com",),
            routing_keys={"default": Secret("r" * 32)}, dry_run=True, api_timeout=5.0, connect_timeout=2.0,
            retry_attempts=3, max_age=3600.0, initial_backoff=2.0, max_backoff=60.0, resend_interval=7200.0,
            concurrency=4, backoff_on_429=10.0, settle_delay=30.0, skip_superseded_triggers=True,
            rate_limit=RateLimit(per_key=60, window_seconds=30.0, overrides={"bulk": (600, 60.0), "slow": (1, 30.0)},
                                 global_limit=(900, 120.0)),
            failure_threshold=3, recovery_timeout=90.0),
        outbox=OutboxSettings(backend="sqlite", path=tmp_path / "data/o.db", redis=RedisSettings(
            url="rediss://cache:6380/1", key_prefix="pd", username="pd", password=Secret("p" * 20), wait_replicas=1,
            wait_timeout=2.0, lease=45.0, socket_timeout=3.0)),
        rules=RulesSettings(paths=(tmp_path / "rules",), watch=True, allow_plugins=("acme_pdrelay", "ops.tools")),
        auth=AuthSettings(
            bearer_tokens=(Secret(tokens["b"]), Secret(tokens["c"])),
            basic=(BasicCredential("am", Secret("hunter2")), BasicCredential("ops", Secret("s3cret"))),
            jwt=JWTSettings(algorithms=("ES256",), audience="pdrelay", issuer="idp", public_key=public.decode(),
                            leeway=10.0, scope_claim="scp",
                            scopes={"intake": "pdrelay:intake", "events": "ev", "admin": "pdrelay/admin"}),
            mtls=MTLSSettings(subjects=("alertmanager",), admin_subjects=("ops",)),
            admin_tokens=(Secret(tokens["d"]), Secret(tokens["e"])),
            endpoints={"intake": ("mtls", "bearer"), "events": ("jwt",), "admin": ("admin_token",)}),
        security=SecuritySettings(encryption_keys=(Secret(key_a), Secret(key_b)), jwt_secret=Secret("j" * 32)),
        audit=AuditSettings(path=tmp_path / "audit/log.jsonl", enabled=False, max_size=1024**2, backups=3,
                            hmac_key=Secret("a" * 32)),
        source="kitchen.yaml",
    )


def test_the_endpoint_groups_are_the_keys_of_auth_endpoints() -> None:
    assert tuple(get_type_hints(EndpointsFile)) == ENDPOINT_GROUPS


@pytest.mark.parametrize(("module", "never"), [("receiver.settings", "receiver.crypto"),
                                               ("receiver.crypto", "receiver.settings")])
def test_settings_and_crypto_do_not_import_each_other(module: str, never: str) -> None:
    """Both depend on receiver.secret; settings check a key's format without the cipher code, and back."""
    done = subprocess.run([sys.executable, "-c", f"import sys, {module}; print({never!r} in sys.modules)"],
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout == "False\n"
