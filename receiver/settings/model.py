"""The settings as pdrelay uses them: frozen, typed values, with every default.

:mod:`receiver.settings.checks` builds them from what the file says
(:mod:`receiver.settings.schema`), taking a key the file leaves out from the defaults here
(the rate limit's from :class:`~receiver.limiter.RateLimit`). Code and tests also build them
directly: ``Settings(outbox=OutboxSettings(path=…))``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from receiver.limiter import RateLimit
from receiver.secret import Secret

__all__ = [
    "AUTH_METHODS",
    "DEFAULT_ALLOWED_HOSTS",
    "DEFAULT_EVENTS_URL",
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
    "ServerSettings",
    "Settings",
    "TLSSettings",
]

DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
DEFAULT_ALLOWED_HOSTS = ("events.pagerduty.com", "events.eu.pagerduty.com")
ENDPOINT_GROUPS = ("intake", "events", "admin")



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
    max_labels: int = 128  # labels per alert (and annotations per alert)
    # intake requests at once; above it: 503 with Retry-After. Memory has its own bound (receiver/admission.py):
    # bodies in progress add up to body_limit at most. A body peaks at up to ~18x its size over ~62 MiB idle
    # (tests/bench/bench_memory.py: +174 MiB for 9.5 MiB of 10,000 alerts x 48 labels): 236 MiB, under the
    # 256 MiB of deploy/; 4 full-size bodies at once, this count's old default, would take ~760 MiB. This
    # count bounds small bodies (a few KB; well under 1 MiB each at the peak): at 4, the 64 connections of
    # bench_intake.py halved throughput (2727 -> 1330 req/s), each group commit holding 4 bodies at most.
    max_concurrent_intake: int = 64
    header_timeout: float = 10.0  # to receive a request's line and headers
    body_timeout: float = 30.0  # to receive a request's body

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
class RedisSettings:
    """``outbox.redis``: where the shared outbox lives when ``outbox.backend`` is ``redis``."""

    url: str | None = None  # redis://, rediss:// (TLS) or unix://; never with a password in it
    key_prefix: str = "pdrelay"  # every key is ``{<prefix>}:…``: one hash tag, one Cluster slot
    sentinels: tuple[tuple[str, int], ...] = ()  # Sentinel (host, port) pairs, instead of url
    service_name: str | None = None  # the master's name in Sentinel
    username: str | None = None
    password: Secret | None = None
    wait_replicas: int = 0  # >0: intake waits (WAIT) for this many replicas to have each write
    wait_timeout: float = 1.0  # how long WAIT waits before intake answers 503
    lease: float = 30.0  # a claimed item comes back to the queue this long after, if not settled
    socket_timeout: float = 5.0  # per Redis command (and to connect)


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    backend: str = "sqlite"
    path: Path = Path("data/outbox.db")
    redis: RedisSettings = field(default_factory=RedisSettings)


@dataclass(frozen=True, slots=True)
class RulesSettings:
    paths: tuple[Path, ...] = (Path("rules"),)
    watch: bool = False
    allow_plugins: tuple[str, ...] = ()  # module prefixes ``module:callable`` plugins may come from


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
    scope_claim: str = "scope"  # space-separated string or list of scopes
    # endpoint group → the scope that opens it; namespaced, as "admin" alone is common in other apps' tokens
    scopes: Mapping[str, str] = field(default_factory=lambda: {g: f"pdrelay:{g}" for g in ENDPOINT_GROUPS})

    def unbound(self) -> str | None:
        """``<key>: required (…)`` for the first of ``audience`` and ``issuer`` left unset, else ``None``.

        Both are needed: without them a token the identity provider issued for another app opens pdrelay.
        """
        if not self.audience:
            return ("audience: required (the audience pdrelay's tokens are issued for); "
                    "a token for another app must not open pdrelay")
        if not self.issuer:
            return ("issuer: required (the issuer pdrelay's tokens come from); "
                    "a token from another issuer must not open pdrelay")
        return None


@dataclass(frozen=True, slots=True)
class MTLSSettings:
    """Client certificates as identities: the subject's CN (or the whole subject) names the client."""

    subjects: tuple[str, ...] = ()  # may use intake and events; empty: any certificate the CA signed
    admin_subjects: tuple[str, ...] = ()  # may also use admin endpoints


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


@dataclass(frozen=True, slots=True)
class AuditSettings:
    path: Path | None = None  # None: next to the outbox, ``audit.jsonl``
    enabled: bool = True
    max_size: int = 10 * 1024 * 1024
    backups: int = 10
    hmac_key: Secret | None = None  # keys the chain, so that a consistent rewrite is detected too


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
        if self.audit.hmac_key is not None:
            found.append(self.audit.hmac_key.reveal())
        if self.outbox.redis.password is not None:
            found.append(self.outbox.redis.password.reveal())
        return found
