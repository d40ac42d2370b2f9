"""Configuration: ``pdrelay.yaml`` → frozen, validated :class:`Settings`.

Every string value may use ``${ENV_VAR}`` (or ``${ENV_VAR:-fallback}``); every secret
may also be given as ``{file: PATH}`` or ``{env: NAME}``. Secrets are held in
:class:`Secret`, whose ``repr``/``str`` never show the value. An invalid file is refused
with a :class:`~receiver.errors.ConfigError` whose message names the key, e.g.
``config: pagerduty.rate_limit.per_key: expected a positive number, got 'x'``.

With no file, :func:`load_settings` returns the embedded defaults: loopback listener,
SQLite outbox under ``./data``, rules from ``rules/``, no routing key — so pdrelay runs
in dry-run and says so.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from receiver.crypto import Keyring
from receiver.errors import ConfigError
from receiver.limiter import RateLimit

__all__ = [
    "AuditSettings",
    "AuthSettings",
    "BasicCredential",
    "JWTSettings",
    "MTLSSettings",
    "OutboxSettings",
    "PagerDutySettings",
    "RulesSettings",
    "Secret",
    "SecuritySettings",
    "ServerSettings",
    "TLSSettings",
    "Settings",
    "default_rules_path",
    "load_settings",
    "parse_duration",
    "parse_size",
    "settings_from_mapping",
]

DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
DEFAULT_ALLOWED_HOSTS = ("events.pagerduty.com", "events.eu.pagerduty.com")


class Secret:
    """A string that never shows itself in ``repr``, ``str``, logs or JSON."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """Server TLS; with ``client_ca_file`` clients present certificates (mTLS)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_auth: str = "none"  # "none" | "optional" | "require" ("require" by default with a client CA)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 9095
    body_limit: int = 10 * 1024 * 1024
    allow_unauthenticated: bool = False
    tls: TLSSettings | None = None
    max_header_bytes: int = 8190  # one request line or header field
    max_alerts: int = 10_000  # per body; set Alertmanager's webhook max_alerts below it
    max_label_bytes: int = 16 * 1024  # one label's name + value
    max_annotation_bytes: int = 256 * 1024  # one annotation's name + value

    @property
    def listen(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PagerDutySettings:
    events_url: str = DEFAULT_EVENTS_URL
    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    routing_keys: Mapping[str, Secret] = field(default_factory=dict)
    dry_run: bool = False
    api_timeout: float = 10.0
    connect_timeout: float = 5.0
    retry_attempts: int = 20
    max_age: float = 24 * 3600.0
    initial_backoff: float = 1.0
    max_backoff: float = 300.0
    resend_interval: float = 4 * 3600.0
    concurrency: int = 16
    rate_limit: RateLimit = field(default_factory=RateLimit)
    backoff_on_429: float = 30.0  # PagerDuty suggests retrying a 429 tens of seconds later
    skip_superseded_triggers: bool = False  # off: PagerDuty hears everything, even a storm's past
    settle_delay: float = 60.0  # a resolve is re-sent this long after, when its trigger ever timed out
    failure_threshold: int = 5
    recovery_timeout: float = 60.0

    @property
    def effective_dry_run(self) -> bool:
        """Dry-run when asked for, or when no routing key is configured at all."""
        return self.dry_run or not self.routing_keys


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    backend: str = "sqlite"
    path: Path = Path("data/outbox.db")


@dataclass(frozen=True, slots=True)
class RulesSettings:
    paths: tuple[Path, ...] = (Path("rules"),)
    watch: bool = False


@dataclass(frozen=True, slots=True)
class BasicCredential:
    username: str
    password: Secret


@dataclass(frozen=True, slots=True)
class JWTSettings:
    """JWT bearer tokens: HS* with ``security.jwt_secret``, RS*/ES* with a public key file."""

    algorithms: tuple[str, ...] = ("HS256",)
    audience: str | None = None
    issuer: str | None = None
    public_key: str | None = None  # PEM text, read from public_key_file
    leeway: float = 30.0  # clock skew allowed on exp / nbf / iat
    scope_claim: str = "scope"  # space-separated string or list naming endpoint groups


@dataclass(frozen=True, slots=True)
class MTLSSettings:
    """Client certificates as identities: the subject's CN (or the whole subject) names the client."""

    subjects: tuple[str, ...] = ()  # may use intake and events; empty: any certificate the CA signed
    admin_subjects: tuple[str, ...] = ()  # may also use admin endpoints


ENDPOINT_GROUPS = ("intake", "events", "admin")
AUTH_METHODS = ("bearer", "basic", "jwt", "mtls", "admin_token")


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Inbound authentication. Empty (the default): no auth, loopback only."""

    bearer_tokens: tuple[Secret, ...] = ()
    basic: tuple[BasicCredential, ...] = ()
    jwt: JWTSettings | None = None
    mtls: MTLSSettings | None = None
    admin_tokens: tuple[Secret, ...] = ()
    # endpoint group → the methods it accepts; a group not named accepts every configured method
    endpoints: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.bearer_tokens or self.basic or self.jwt or self.mtls or self.admin_tokens)


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    encryption_keys: tuple[Secret, ...] = ()  # first encrypts, any decrypts
    jwt_secret: Secret | None = None

    def keyring(self) -> Keyring | None:
        """The AES-256-GCM keyring for what pdrelay stores, or ``None`` when no key is configured."""
        return Keyring.from_keys(self.encryption_keys) if self.encryption_keys else None


@dataclass(frozen=True, slots=True)
class AuditSettings:
    path: Path | None = None  # None: next to the outbox, ``audit.jsonl``
    enabled: bool = True
    max_size: int = 10 * 1024 * 1024
    backups: int = 10


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    pagerduty: PagerDutySettings = field(default_factory=PagerDutySettings)
    outbox: OutboxSettings = field(default_factory=OutboxSettings)
    rules: RulesSettings = field(default_factory=RulesSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    source: str = "<embedded defaults>"

    @property
    def audit_path(self) -> Path:
        return self.audit.path if self.audit.path is not None else self.outbox.path.parent / "audit.jsonl"

    def secrets(self) -> list[str]:
        """Every secret value, for redaction and leak checks."""
        found = [s.reveal() for s in self.pagerduty.routing_keys.values()]
        found += [s.reveal() for s in (*self.auth.bearer_tokens, *self.auth.admin_tokens)]
        found += [b.password.reveal() for b in self.auth.basic]
        found += [s.reveal() for s in self.security.encryption_keys]
        if self.security.jwt_secret is not None:
            found.append(self.security.jwt_secret.reveal())
        return found


# --------------------------------------------------------------------------- loading

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2, "GB": 1000**3, "GiB": 1024**3,
}


def load_settings(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a config file; ``None`` gives the embedded defaults."""
    env = os.environ if environ is None else environ
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
    if data is None:
        data = {}
    return settings_from_mapping(data, environ=env, source=str(p), base_dir=p.parent)


def default_rules_path() -> Path:
    """``./rules`` when it exists (a checkout), else the example rules shipped in the package."""
    local = Path("rules")
    return local if local.is_dir() else Path(__file__).parent / "defaults" / "rules.yaml"


def settings_from_mapping(
    data: Any,
    *,
    environ: Mapping[str, str] | None = None,
    source: str = "<mapping>",
    base_dir: Path | None = None,
) -> Settings:
    """Validate an already-parsed config mapping."""
    env = os.environ if environ is None else environ
    r = _Reader(env, base_dir or Path.cwd())
    root = r.mapping(data, "", {"server", "pagerduty", "outbox", "rules", "auth", "security", "audit", "cache"})
    if root.get("cache") not in (None, {}):
        raise ConfigError("config: cache: this section is not supported by this version of pdrelay")
    server = _server(r, root.get("server"))
    pagerduty = _pagerduty(r, root.get("pagerduty"))
    outbox = _outbox(r, root.get("outbox"))
    rules = _rules(r, root.get("rules"))
    security = _security(r, root.get("security"))
    auth = _auth(r, root.get("auth"), security, server)
    audit = _audit(r, root.get("audit"))
    if not _is_loopback(server.host) and not server.allow_unauthenticated and not auth.enabled:
        raise ConfigError(
            f"config: server.listen: {server.listen} is not a loopback address and no auth is configured; "
            "set server.allow_unauthenticated: true to expose pdrelay without authentication"
        )
    return Settings(server=server, pagerduty=pagerduty, outbox=outbox, rules=rules, auth=auth,
                    security=security, audit=audit, source=source)


def parse_duration(value: Any, key: str) -> float:
    """``30``, ``1.5``, ``"500ms"``, ``"30s"``, ``"5m"``, ``"4h"``, ``"1d"`` → seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"config: {key}: expected a duration such as 30s or 5m, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ConfigError(f"config: {key}: expected a duration such as 30s or 5m, got {value!r}")
    if seconds < 0:
        raise ConfigError(f"config: {key}: must not be negative, got {value!r}")
    return seconds


def parse_size(value: Any, key: str) -> int:
    """``1048576``, ``"512KiB"``, ``"10MiB"`` → bytes."""
    if isinstance(value, bool):
        raise ConfigError(f"config: {key}: expected a size such as 10MiB, got {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE_RE.match(value)):
        size = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    else:
        raise ConfigError(f"config: {key}: expected a size such as 10MiB, got {value!r}")
    if size <= 0:
        raise ConfigError(f"config: {key}: must be positive, got {value!r}")
    return size


class _Reader:
    """Typed access to the raw mapping, with ``${ENV}`` interpolation and key-naming errors."""

    def __init__(self, environ: Mapping[str, str], base_dir: Path) -> None:
        self.environ = environ
        self.base_dir = base_dir

    def mapping(self, value: Any, key: str, allowed: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"config: {key or '<top level>'}: expected a mapping, got {_kind(value)}")
        for k in value:
            if not isinstance(k, str) or k not in allowed:
                where = f"{key}.{k}" if key else str(k)
                raise ConfigError(f"config: {where}: unknown key (allowed: {', '.join(sorted(allowed))})")
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise ConfigError(f"config: {key}: expected a string, got {_kind(value)}")
        return self.interpolate(value, key)

    def interpolate(self, value: str, key: str) -> str:
        def sub(m: re.Match[str]) -> str:
            name, fallback = m.group(1), m.group(2)
            if name in self.environ:
                return self.environ[name]
            if fallback is not None:
                return fallback
            raise ConfigError(f"config: {key}: environment variable {name} is not set")

        return _ENV_RE.sub(sub, value)

    def scalar(self, value: Any, key: str) -> Any:
        """A scalar after interpolation; numeric/bool strings from ``${ENV}`` become YAML scalars."""
        if isinstance(value, str) and "${" in value:
            return yaml.safe_load(self.interpolate(value, key))
        return value

    def boolean(self, value: Any, key: str) -> bool:
        v = self.scalar(value, key)
        if not isinstance(v, bool):
            raise ConfigError(f"config: {key}: expected true or false, got {value!r}")
        return v

    def number(self, value: Any, key: str, *, integer: bool = False, minimum: float = 0.0) -> float:
        v = self.scalar(value, key)
        ok = isinstance(v, int) if integer else isinstance(v, int | float)
        if isinstance(v, bool) or not ok or v < minimum:
            what = "an integer" if integer else "a number"
            raise ConfigError(f"config: {key}: expected {what} ≥ {minimum:g}, got {value!r}")
        return float(v)

    def secret(self, value: Any, key: str) -> Secret:
        if isinstance(value, dict):
            spec = self.mapping(value, key, {"file", "env"})
            if len(spec) != 1:
                raise ConfigError(f"config: {key}: give exactly one of file or env")
            if "file" in spec:
                path = self.base_dir / self.string(spec["file"], f"{key}.file")
                try:
                    text = path.read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise ConfigError(f"config: {key}.file: cannot read {path}: {exc.strerror}") from exc
            else:
                name = self.string(spec["env"], f"{key}.env")
                if name not in self.environ:
                    raise ConfigError(f"config: {key}.env: environment variable {name} is not set")
                text = self.environ[name].strip()
        else:
            text = self.string(value, key).strip()
        if not text:
            raise ConfigError(f"config: {key}: is empty")
        return Secret(text)

    def file(self, value: Any, key: str) -> Path:
        """A path (relative to the config file) that must name a readable file."""
        path = self.base_dir / self.string(value, key)
        if not path.is_file() or not os.access(path, os.R_OK):
            raise ConfigError(f"config: {key}: {path} is not a readable file")
        return path

    def string_list(self, value: Any, key: str) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"config: {key}: expected a list of strings, got {_kind(value)}")
        return [self.string(v, f"{key}[{i}]") for i, v in enumerate(value)]

    def token_list(self, m: dict[str, Any], name: str, section: str) -> tuple[Secret, ...]:
        """``name: [secret, …]`` and/or ``name_file: PATH`` (one token a line, ``#`` comments)."""
        tokens: list[tuple[str, Secret]] = []  # (the key naming it, the token)
        raw = m.get(name)
        if raw is not None:
            items = raw if isinstance(raw, list) else [raw]
            tokens += [(f"{section}.{name}[{i}]", self.secret(v, f"{section}.{name}[{i}]"))
                       for i, v in enumerate(items)]
        if m.get(f"{name}_file") is not None:
            key = f"{section}.{name}_file"
            path = self.file(m[f"{name}_file"], key)
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
            found = [(f"{key}: line {n}", Secret(ln)) for n, ln in enumerate(lines, 1)
                     if ln and not ln.startswith("#")]
            if not found:
                raise ConfigError(f"config: {key}: {path} holds no token")
            tokens += found
        for where, t in tokens:
            if len(t.reveal()) < 16:
                raise ConfigError(f"config: {where}: a token needs at least 16 characters")
        return tuple(t for _, t in tokens)


def _server(r: _Reader, raw: Any) -> ServerSettings:
    m = r.mapping(raw, "server", {
        "listen", "body_limit", "allow_unauthenticated", "tls",
        "max_header_bytes", "max_alerts", "max_label_bytes", "max_annotation_bytes",
    })
    d = ServerSettings()
    host, port = d.host, d.port
    if "listen" in m:
        listen = r.string(m["listen"], "server.listen")
        host, _, port_s = listen.rpartition(":")
        host = host.strip("[]")
        if not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise ConfigError(f"config: server.listen: expected HOST:PORT, got {listen!r}")
        port = int(port_s)
    body_limit = parse_size(r.scalar(m["body_limit"], "server.body_limit"), "server.body_limit") \
        if "body_limit" in m else d.body_limit
    allow = r.boolean(m["allow_unauthenticated"], "server.allow_unauthenticated") \
        if "allow_unauthenticated" in m else False

    def size(k: str, default: int) -> int:
        return parse_size(r.scalar(m[k], f"server.{k}"), f"server.{k}") if k in m else default

    max_alerts = int(r.number(m["max_alerts"], "server.max_alerts", integer=True, minimum=1)) \
        if "max_alerts" in m else d.max_alerts
    return ServerSettings(
        host=host, port=port, body_limit=body_limit, allow_unauthenticated=allow,
        tls=_tls(r, m.get("tls")),
        max_header_bytes=size("max_header_bytes", d.max_header_bytes),
        max_alerts=max_alerts,
        max_label_bytes=size("max_label_bytes", d.max_label_bytes),
        max_annotation_bytes=size("max_annotation_bytes", d.max_annotation_bytes),
    )


def _tls(r: _Reader, raw: Any) -> TLSSettings | None:
    if raw is None:
        return None
    m = r.mapping(raw, "server.tls", {"cert_file", "key_file", "client_ca_file", "client_auth"})
    for k in ("cert_file", "key_file"):
        if k not in m:
            raise ConfigError(f"config: server.tls.{k}: required when server.tls is set")
    files = {k: r.file(m[k], f"server.tls.{k}") for k in ("cert_file", "key_file", "client_ca_file") if k in m}
    ca = files.get("client_ca_file")
    client_auth = r.string(m["client_auth"], "server.tls.client_auth") if "client_auth" in m \
        else ("require" if ca else "none")
    if client_auth not in ("none", "optional", "require"):
        raise ConfigError(f"config: server.tls.client_auth: expected none, optional or require, got {client_auth!r}")
    if client_auth != "none" and ca is None:
        raise ConfigError("config: server.tls.client_auth: needs server.tls.client_ca_file to check certificates")
    return TLSSettings(cert_file=files["cert_file"], key_file=files["key_file"], client_ca_file=ca,
                       client_auth=client_auth)


def _security(r: _Reader, raw: Any) -> SecuritySettings:
    m = r.mapping(raw, "security", {"encryption_key", "jwt_secret"})
    keys: tuple[Secret, ...] = ()
    if m.get("encryption_key") is not None:
        raw_keys = m["encryption_key"]
        if isinstance(raw_keys, list):
            if not raw_keys:
                raise ConfigError("config: security.encryption_key: expected a key or a non-empty list of keys")
            keys = tuple(r.secret(k, f"security.encryption_key[{i}]") for i, k in enumerate(raw_keys))
        else:
            keys = (r.secret(raw_keys, "security.encryption_key"),)
        Keyring.from_keys(keys)  # refuse a bad key now, naming its position (never its value)
    jwt_secret = r.secret(m["jwt_secret"], "security.jwt_secret") if m.get("jwt_secret") is not None else None
    return SecuritySettings(encryption_keys=keys, jwt_secret=jwt_secret)


def _auth(r: _Reader, raw: Any, security: SecuritySettings, server: ServerSettings) -> AuthSettings:
    m = r.mapping(raw, "auth", {
        "bearer_tokens", "bearer_tokens_file", "basic", "jwt", "mtls", "admin_tokens", "admin_tokens_file",
        "endpoints",
    })
    bearer = r.token_list(m, "bearer_tokens", "auth")
    admin = r.token_list(m, "admin_tokens", "auth")
    basic: list[BasicCredential] = []
    raw_basic = m.get("basic")
    if raw_basic is not None:
        entries = raw_basic if isinstance(raw_basic, list) else [raw_basic]
        for i, entry in enumerate(entries):
            where = f"auth.basic[{i}]" if isinstance(raw_basic, list) else "auth.basic"
            bm = r.mapping(entry, where, {"username", "password", "password_file"})
            if "username" not in bm:
                raise ConfigError(f"config: {where}.username: required")
            if ("password" in bm) == ("password_file" in bm):
                raise ConfigError(f"config: {where}: give exactly one of password or password_file")
            if "password" in bm:
                password = r.secret(bm["password"], f"{where}.password")
            else:
                path = r.file(bm["password_file"], f"{where}.password_file")
                password = Secret(path.read_text(encoding="utf-8").strip())
                if not password.reveal():
                    raise ConfigError(f"config: {where}.password_file: {path} is empty")
            username = r.string(bm["username"], f"{where}.username")
            if not username or ":" in username:
                raise ConfigError(f"config: {where}.username: must be non-empty and contain no ':'")
            basic.append(BasicCredential(username, password))
    jwt = _jwt(r, m.get("jwt"), security)
    mtls = None
    if m.get("mtls") is not None:
        mm = r.mapping(m["mtls"], "auth.mtls", {"subjects", "admin_subjects"})
        mtls = MTLSSettings(
            subjects=tuple(r.string_list(mm.get("subjects"), "auth.mtls.subjects")),
            admin_subjects=tuple(r.string_list(mm.get("admin_subjects"), "auth.mtls.admin_subjects")),
        )
        if server.tls is None or server.tls.client_ca_file is None or server.tls.client_auth == "none":
            raise ConfigError("config: auth.mtls: needs server.tls with a client_ca_file "
                              "(and client_auth optional or require)")
    configured = {"bearer": bearer, "basic": basic, "jwt": jwt, "mtls": mtls, "admin_token": admin}
    endpoints: dict[str, tuple[str, ...]] = {}
    for group, methods in r.mapping(m.get("endpoints"), "auth.endpoints", set(ENDPOINT_GROUPS)).items():
        names = r.string_list(methods, f"auth.endpoints.{group}")
        if not names:
            raise ConfigError(f"config: auth.endpoints.{group}: expected a non-empty list of methods")
        for name in names:
            if name not in AUTH_METHODS:
                raise ConfigError(
                    f"config: auth.endpoints.{group}: unknown method {name!r} (known: {', '.join(AUTH_METHODS)})")
            if not configured[name]:
                raise ConfigError(f"config: auth.endpoints.{group}: method {name!r} is not configured under auth")
        endpoints[group] = tuple(dict.fromkeys(names))
    return AuthSettings(bearer_tokens=bearer, basic=tuple(basic), jwt=jwt, mtls=mtls, admin_tokens=admin,
                        endpoints=endpoints)


_SYMMETRIC = ("HS256", "HS384", "HS512")
_ASYMMETRIC = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA")


_HS_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_ES_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}


def _jwt_public_key(path: Path, algorithms: tuple[str, ...]) -> str:
    """The PEM public key (from a public key or a certificate) that every one of ``algorithms`` can use."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    key_name = "config: auth.jwt.public_key_file"
    data = path.read_bytes()
    try:
        key = x509.load_pem_x509_certificate(data).public_key() if b"CERTIFICATE" in data \
            else serialization.load_pem_public_key(data)
    except ValueError:
        raise ConfigError(f"{key_name}: {path} holds no PEM public key") from None
    for alg in algorithms:
        if alg[:2] in ("RS", "PS"):
            fits = isinstance(key, rsa.RSAPublicKey)
        elif alg[:2] == "ES":
            fits = isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == _ES_CURVES[alg]
        else:
            fits = isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
        if not fits:
            raise ConfigError(f"{key_name}: {path} holds a key {alg} cannot use")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        raise ConfigError(f"{key_name}: {path} holds a {key.key_size}-bit RSA key; at least 2048 bits are needed")
    pem: bytes = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode()


def _jwt(r: _Reader, raw: Any, security: SecuritySettings) -> JWTSettings | None:
    if raw is None:
        return None
    m = r.mapping(raw, "auth.jwt", {"algorithms", "audience", "issuer", "public_key_file", "leeway", "scope_claim"})
    d = JWTSettings()
    algorithms = tuple(r.string_list(m["algorithms"], "auth.jwt.algorithms")) if "algorithms" in m \
        else d.algorithms
    if not algorithms:
        raise ConfigError("config: auth.jwt.algorithms: expected a non-empty list")
    for alg in algorithms:
        if alg not in _SYMMETRIC + _ASYMMETRIC:
            raise ConfigError(f"config: auth.jwt.algorithms: unsupported algorithm {alg!r} ('none' is never accepted)")
    if any(a in _SYMMETRIC for a in algorithms) and any(a in _ASYMMETRIC for a in algorithms):
        raise ConfigError("config: auth.jwt.algorithms: do not mix HS* with RS*/ES* algorithms")
    public_key = None
    if any(a in _ASYMMETRIC for a in algorithms):
        if "public_key_file" not in m:
            raise ConfigError(f"config: auth.jwt.public_key_file: required for {', '.join(algorithms)}")
        path = r.file(m["public_key_file"], "auth.jwt.public_key_file")
        public_key = _jwt_public_key(path, algorithms)
    elif "public_key_file" in m:
        raise ConfigError("config: auth.jwt.public_key_file: not used by HS* algorithms (they use "
                          "security.jwt_secret); list RS*/ES* algorithms to verify with a public key")
    elif security.jwt_secret is None:
        raise ConfigError(f"config: auth.jwt: {', '.join(algorithms)} needs security.jwt_secret")
    else:
        need = max(_HS_MIN_BYTES[a] for a in algorithms)  # RFC 7518 §3.2: at least the hash's size
        if len(security.jwt_secret.reveal().encode()) < need:
            raise ConfigError(f"config: security.jwt_secret: {', '.join(algorithms)} needs a secret of at least "
                              f"{need} bytes")
    leeway = parse_duration(r.scalar(m["leeway"], "auth.jwt.leeway"), "auth.jwt.leeway") if "leeway" in m \
        else d.leeway
    return JWTSettings(
        algorithms=algorithms,
        audience=r.string(m["audience"], "auth.jwt.audience") if "audience" in m else None,
        issuer=r.string(m["issuer"], "auth.jwt.issuer") if "issuer" in m else None,
        public_key=public_key,
        leeway=leeway,
        scope_claim=r.string(m["scope_claim"], "auth.jwt.scope_claim") if "scope_claim" in m else d.scope_claim,
    )


def _audit(r: _Reader, raw: Any) -> AuditSettings:
    m = r.mapping(raw, "audit", {"path", "enabled", "max_size", "backups"})
    d = AuditSettings()
    return AuditSettings(
        path=r.base_dir / r.string(m["path"], "audit.path") if "path" in m else None,
        enabled=r.boolean(m["enabled"], "audit.enabled") if "enabled" in m else True,
        max_size=parse_size(r.scalar(m["max_size"], "audit.max_size"), "audit.max_size")
        if "max_size" in m else d.max_size,
        backups=int(r.number(m["backups"], "audit.backups", integer=True, minimum=1))
        if "backups" in m else d.backups,
    )


_PD_KEYS = {
    "events_url", "allowed_hosts", "routing_keys", "dry_run", "api_timeout", "connect_timeout",
    "retry_attempts", "max_age", "retry", "resend_interval", "concurrency", "backoff_on_429", "settle_delay",
    "skip_superseded_triggers",
    "rate_limit", "circuit_breaker", "api_token",
}


def _pagerduty(r: _Reader, raw: Any) -> PagerDutySettings:
    m = r.mapping(raw, "pagerduty", _PD_KEYS)
    d = PagerDutySettings()
    if m.get("api_token") is not None:
        raise ConfigError("config: pagerduty.api_token: not supported by this version of pdrelay")
    url = r.string(m["events_url"], "pagerduty.events_url") if "events_url" in m else d.events_url
    hosts = d.allowed_hosts
    if "allowed_hosts" in m:
        raw_hosts = m["allowed_hosts"]
        if not isinstance(raw_hosts, list) or not raw_hosts:
            raise ConfigError("config: pagerduty.allowed_hosts: expected a non-empty list of host names")
        hosts = tuple(r.string(h, f"pagerduty.allowed_hosts[{i}]").lower() for i, h in enumerate(raw_hosts))
    _check_events_url(url, hosts)
    keys: dict[str, Secret] = {}
    raw_keys = m.get("routing_keys")
    if raw_keys is not None:
        if not isinstance(raw_keys, dict):
            raise ConfigError("config: pagerduty.routing_keys: expected a mapping of name: key")
        for name, value in raw_keys.items():
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise ConfigError(f"config: pagerduty.routing_keys.{name}: names use letters, digits, _ . -")
            keys[name] = r.secret(value, f"pagerduty.routing_keys.{name}")
    retry = r.mapping(m.get("retry"), "pagerduty.retry", {"initial_backoff", "max_backoff"})

    def dur(mp: dict[str, Any], k: str, key: str, default: float) -> float:
        return parse_duration(r.scalar(mp[k], key), key) if k in mp else default

    initial = dur(retry, "initial_backoff", "pagerduty.retry.initial_backoff", d.initial_backoff)
    maximum = dur(retry, "max_backoff", "pagerduty.retry.max_backoff", d.max_backoff)
    if initial <= 0 or maximum < initial:
        raise ConfigError("config: pagerduty.retry: need 0 < initial_backoff ≤ max_backoff")
    api_timeout = dur(m, "api_timeout", "pagerduty.api_timeout", d.api_timeout)
    connect_timeout = dur(m, "connect_timeout", "pagerduty.connect_timeout", d.connect_timeout)
    if api_timeout <= 0 or connect_timeout <= 0:
        raise ConfigError("config: pagerduty.api_timeout: timeouts must be positive")
    return PagerDutySettings(
        events_url=url,
        allowed_hosts=hosts,
        routing_keys=keys,
        dry_run=r.boolean(m["dry_run"], "pagerduty.dry_run") if "dry_run" in m else False,
        api_timeout=api_timeout,
        connect_timeout=connect_timeout,
        retry_attempts=int(r.number(m["retry_attempts"], "pagerduty.retry_attempts", integer=True, minimum=1))
        if "retry_attempts" in m else d.retry_attempts,
        max_age=dur(m, "max_age", "pagerduty.max_age", d.max_age),
        initial_backoff=initial,
        max_backoff=maximum,
        resend_interval=dur(m, "resend_interval", "pagerduty.resend_interval", d.resend_interval),
        concurrency=int(r.number(m["concurrency"], "pagerduty.concurrency", integer=True, minimum=1))
        if "concurrency" in m else d.concurrency,
        rate_limit=_rate_limit(r, m.get("rate_limit")),
        backoff_on_429=dur(m, "backoff_on_429", "pagerduty.backoff_on_429", d.backoff_on_429),
        settle_delay=dur(m, "settle_delay", "pagerduty.settle_delay", d.settle_delay),
        skip_superseded_triggers=r.boolean(m["skip_superseded_triggers"], "pagerduty.skip_superseded_triggers")
        if "skip_superseded_triggers" in m else False,
        **_circuit_breaker(r, m.get("circuit_breaker")),
    )


def _rate_limit(r: _Reader, raw: Any) -> RateLimit:
    key = "pagerduty.rate_limit"
    m = r.mapping(raw, key, {"per_key", "window_seconds", "overrides", "global"})

    def pair(mp: dict[str, Any], where: str, default: tuple[int, float]) -> tuple[int, float]:
        n = int(r.number(mp["per_key"], f"{where}.per_key", integer=True, minimum=1)) if "per_key" in mp \
            else default[0]
        w = parse_duration(r.scalar(mp["window_seconds"], f"{where}.window_seconds"), f"{where}.window_seconds") \
            if "window_seconds" in mp else default[1]
        if w <= 0:
            raise ConfigError(f"config: {where}.window_seconds: must be positive")
        return n, w

    per_key, window = pair(m, key, (120, 60.0))
    overrides = {}
    for name, spec in r.mapping(m.get("overrides"), f"{key}.overrides", set(m.get("overrides") or {})).items():
        where = f"{key}.overrides.{name}"
        overrides[name] = pair(r.mapping(spec, where, {"per_key", "window_seconds"}), where, (per_key, window))
    glob = None
    if m.get("global") is not None:
        where = f"{key}.global"
        gm = r.mapping(m["global"], where, {"per_key", "window_seconds"})
        if "per_key" not in gm:
            raise ConfigError(f"config: {where}.per_key: required (events per window across all keys)")
        glob = pair(gm, where, (per_key, window))
    return RateLimit(per_key=per_key, window_seconds=window, overrides=overrides, global_limit=glob)


def _circuit_breaker(r: _Reader, raw: Any) -> dict[str, Any]:
    key = "pagerduty.circuit_breaker"
    m = r.mapping(raw, key, {"failure_threshold", "recovery_timeout"})
    out: dict[str, Any] = {}
    if "failure_threshold" in m:
        out["failure_threshold"] = int(
            r.number(m["failure_threshold"], f"{key}.failure_threshold", integer=True, minimum=1))
    if "recovery_timeout" in m:
        out["recovery_timeout"] = parse_duration(
            r.scalar(m["recovery_timeout"], f"{key}.recovery_timeout"), f"{key}.recovery_timeout")
        if out["recovery_timeout"] <= 0:
            raise ConfigError(f"config: {key}.recovery_timeout: must be positive")
    return out


def _check_events_url(url: str, hosts: tuple[str, ...]) -> None:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise ConfigError(f"config: pagerduty.events_url: expected an https:// URL, got {url!r}")
    if host not in hosts:
        raise ConfigError(
            f"config: pagerduty.events_url: host {host!r} is not in pagerduty.allowed_hosts "
            f"({', '.join(hosts)})"
        )
    if parts.scheme == "http" and not _is_loopback(host):
        raise ConfigError(
            f"config: pagerduty.events_url: plain http is only allowed for loopback hosts, got {url!r}"
        )


def _outbox(r: _Reader, raw: Any) -> OutboxSettings:
    m = r.mapping(raw, "outbox", {"backend", "path", "redis_url"})
    backend = r.string(m["backend"], "outbox.backend") if "backend" in m else "sqlite"
    if backend != "sqlite":
        raise ConfigError(f"config: outbox.backend: only 'sqlite' is supported by this version, got {backend!r}")
    path = r.base_dir / r.string(m["path"], "outbox.path") if "path" in m else OutboxSettings().path
    return OutboxSettings(backend=backend, path=path)


def _rules(r: _Reader, raw: Any) -> RulesSettings:
    m = r.mapping(raw, "rules", {"paths", "watch"})
    paths = RulesSettings().paths
    if "paths" in m:
        raw_paths = m["paths"]
        if isinstance(raw_paths, str):
            raw_paths = [raw_paths]
        if not isinstance(raw_paths, list) or not raw_paths:
            raise ConfigError("config: rules.paths: expected a non-empty list of files or folders")
        paths = tuple(r.base_dir / r.string(p, f"rules.paths[{i}]") for i, p in enumerate(raw_paths))
    watch = r.boolean(m["watch"], "rules.watch") if "watch" in m else False
    return RulesSettings(paths=paths, watch=watch)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )
