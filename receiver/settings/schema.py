"""What ``pdrelay.yaml`` may say: every section and key, with its type and its rules.

One ``TypedDict`` per part of the file, read by :class:`~receiver.settings.read.Reader`
(whose docstring says what each type and marker accepts); a key not declared here is
refused by name; ``| None`` says a key may also be null (which counts as left out, as for
mappings and lists that may be empty). No defaults here: a key left out takes the default of the settings it
becomes (:mod:`receiver.settings.model`). Where a part of the file has another shape than
its settings value, a ``From`` marker names the conversion (:mod:`receiver.settings.convert`);
:mod:`receiver.settings.checks` puts the sections together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Required, TypedDict

from receiver.limiter import RateLimit
from receiver.secret import Secret
from receiver.settings import convert
from receiver.settings.model import BasicCredential, JWTSettings, TLSSettings
from receiver.settings.read import AtLeast, Check, From, Missing, NonEmpty, OneOrMany
from receiver.settings.values import Count, Duration, Period, ReadableFile, Size

__all__ = [
    "AuditFile",
    "AuthFile",
    "BasicFile",
    "BreakerFile",
    "ConfigFile",
    "EndpointsFile",
    "GlobalLimitFile",
    "JWTFile",
    "LimitFile",
    "MTLSFile",
    "OutboxFile",
    "PagerDutyFile",
    "RateLimitFile",
    "RedisFile",
    "RetryFile",
    "RulesFile",
    "ScopesFile",
    "SecurityFile",
    "ServerFile",
    "TLSFile",
]


class TLSFile(TypedDict, total=False):
    cert_file: Required[Annotated[ReadableFile, Missing("required when server.tls is set")]]
    key_file: Required[Annotated[ReadableFile, Missing("required when server.tls is set")]]
    client_ca_file: ReadableFile
    client_auth: Literal["none", "optional", "require"]  # default: require with a client CA, else none


class ServerFile(TypedDict, total=False):
    listen: Annotated[tuple[str, int], From(str, convert.host_port)]
    body_limit: Size
    allow_unauthenticated: bool
    tls: Annotated[TLSSettings, From(TLSFile, convert.tls_settings)]
    max_header_bytes: Size
    max_alerts: Count
    max_label_bytes: Size
    max_annotation_bytes: Size
    max_labels: Count
    max_concurrent_intake: Count
    header_timeout: Period
    body_timeout: Period


class RetryFile(TypedDict, total=False):
    initial_backoff: Duration
    max_backoff: Duration


class BreakerFile(TypedDict, total=False):  # its keys are PagerDutySettings fields
    failure_threshold: Count
    recovery_timeout: Period


class LimitFile(TypedDict, total=False):  # a key left out takes the value of rate_limit itself
    per_key: Count
    window_seconds: Period


class GlobalLimitFile(TypedDict, total=False):
    per_key: Required[Annotated[Count, Missing("required (events per window across all keys)")]]
    window_seconds: Period


RateLimitFile = TypedDict("RateLimitFile", {  # the functional form, because "global" is a Python keyword
    "per_key": Count,
    "window_seconds": Period,
    "overrides": dict[str, LimitFile],
    "global": GlobalLimitFile,
}, total=False)


class PagerDutyFile(TypedDict, total=False):
    events_url: str
    allowed_hosts: Annotated[tuple[str, ...], NonEmpty("expected a non-empty list of host names")]
    routing_keys: Annotated[dict[str, Secret], Check(convert.routing_key_names)]
    dry_run: bool
    api_timeout: Duration
    connect_timeout: Duration
    retry_attempts: Count
    max_age: Duration
    retry: RetryFile
    resend_interval: Duration
    concurrency: Count
    backoff_on_429: Duration
    settle_delay: Duration
    skip_superseded_triggers: bool
    rate_limit: Annotated[RateLimit, From(RateLimitFile, convert.rate_limit)]
    circuit_breaker: BreakerFile
    api_token: Annotated[Any, Check(convert.not_supported)]


_HostPort = Annotated[tuple[str, int], From(str, convert.host_port)]


class RedisFile(TypedDict, total=False):  # its keys are RedisSettings fields; checked together in checks
    url: Annotated[str, Check(convert.redis_url)]
    key_prefix: Annotated[str, Check(convert.redis_key_prefix)]
    sentinels: Annotated[tuple[_HostPort, ...], OneOrMany(), NonEmpty("expected a non-empty list of HOST:PORT")] | None
    service_name: Annotated[str, Check(convert.not_blank)] | None
    username: Annotated[str, Check(convert.not_blank)]
    password: Secret | None
    wait_replicas: Annotated[int, AtLeast(0)]
    wait_timeout: Period
    lease: Period
    socket_timeout: Period


class OutboxFile(TypedDict, total=False):
    backend: Literal["sqlite", "redis"]
    path: Path
    redis: RedisFile


class RulesFile(TypedDict, total=False):
    paths: Annotated[tuple[Path, ...], OneOrMany(), NonEmpty("expected a non-empty list of files or folders")]
    watch: bool
    allow_plugins: Annotated[tuple[str, ...], OneOrMany(), Check(convert.module_prefixes)]


class BasicFile(TypedDict, total=False):
    username: Required[str]
    password: Secret
    password_file: ReadableFile  # exactly one of password and password_file


class JWTFile(TypedDict, total=False):
    algorithms: Annotated[tuple[str, ...], OneOrMany(), NonEmpty("expected a non-empty list")]
    audience: str
    issuer: str
    public_key_file: ReadableFile
    leeway: Duration
    scope_claim: str
    scopes: ScopesFile


class ScopesFile(TypedDict, total=False):  # the keys are ENDPOINT_GROUPS
    intake: str
    events: str
    admin: str


class MTLSFile(TypedDict, total=False):
    subjects: Annotated[tuple[str, ...], OneOrMany()]
    admin_subjects: Annotated[tuple[str, ...], OneOrMany()]


_Methods = Annotated[tuple[str, ...], OneOrMany(), NonEmpty("expected a non-empty list of methods")]


class EndpointsFile(TypedDict, total=False):  # the keys are ENDPOINT_GROUPS
    intake: _Methods
    events: _Methods
    admin: _Methods


_Tokens = Annotated[tuple[Annotated[Secret, Check(convert.long_enough)], ...], OneOrMany()]
_TokenFile = Annotated[tuple[Secret, ...], From(ReadableFile, convert.token_file)] | None
_Basic = Annotated[BasicCredential, From(BasicFile, convert.basic_credential)]


class AuthFile(TypedDict, total=False):
    bearer_tokens: _Tokens
    bearer_tokens_file: _TokenFile
    basic: Annotated[tuple[_Basic, ...], OneOrMany()]
    jwt: Annotated[JWTSettings, From(JWTFile, convert.jwt_settings)]
    mtls: MTLSFile
    admin_tokens: _Tokens
    admin_tokens_file: _TokenFile
    endpoints: EndpointsFile


class SecurityFile(TypedDict, total=False):
    encryption_key: Annotated[tuple[Secret, ...], OneOrMany(), NonEmpty("expected a key or a non-empty list of keys"),
                              Check(convert.encryption_keys)] | None
    jwt_secret: Secret | None


class AuditFile(TypedDict, total=False):
    path: Path
    enabled: bool
    max_size: Size
    backups: Count
    hmac_key: Annotated[Secret, Check(convert.long_enough)] | None


class ConfigFile(TypedDict, total=False):
    server: ServerFile
    pagerduty: PagerDutyFile
    outbox: OutboxFile
    rules: RulesFile
    auth: AuthFile
    security: SecurityFile
    audit: AuditFile
    cache: Annotated[Any, Check(convert.empty_section)]
