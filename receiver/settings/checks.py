"""From the file, read, to :class:`~receiver.settings.model.Settings`: the sections put
together, and the checks that look at more than one key.

Those checks: the events URL against ``pagerduty.allowed_hosts`` (http only for loopback),
the retry backoffs and the timeouts, an HS* JWT against ``security.jwt_secret``, mTLS
against ``server.tls``, the methods each endpoint group accepts against those configured,
and a listener off loopback against auth.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from receiver.errors import ConfigError
from receiver.settings.model import (
    AUTH_METHODS,
    AuditSettings,
    AuthSettings,
    MTLSSettings,
    OutboxSettings,
    PagerDutySettings,
    RedisSettings,
    RulesSettings,
    SecuritySettings,
    ServerSettings,
    Settings,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from receiver.settings.schema import AuthFile, ConfigFile, OutboxFile, PagerDutyFile, ServerFile

__all__ = ["build"]

_HS_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}  # RFC 7518 §3.2: at least the hash's size


def build(file: ConfigFile, source: str) -> Settings:
    """The settings the file describes; raises ConfigError when two keys do not fit together."""
    server = _server(file.get("server", {}))
    pagerduty = _pagerduty(file.get("pagerduty", {}))
    security_file = file.get("security", {})
    security = SecuritySettings(encryption_keys=security_file.get("encryption_key") or (),
                                jwt_secret=security_file.get("jwt_secret"))
    auth = _auth(file.get("auth", {}), security, server)
    if not _is_loopback(server.host) and not server.allow_unauthenticated and not auth.enabled:
        raise ConfigError(
            f"config: server.listen: {server.listen} is not a loopback address and no auth is configured; "
            "set server.allow_unauthenticated: true to expose pdrelay without authentication"
        )
    return Settings(server=server, pagerduty=pagerduty, outbox=_outbox(file.get("outbox", {}), pagerduty),
                    rules=RulesSettings(**file.get("rules", {})), auth=auth, security=security,
                    audit=AuditSettings(**file.get("audit", {})), source=source)


def _server(server: ServerFile) -> ServerSettings:
    default = ServerSettings()
    host, port = server.get("listen", (default.host, default.port))
    return ServerSettings(host=host, port=port, **_except(server, "listen"))


def _pagerduty(pd: PagerDutyFile) -> PagerDutySettings:
    default = PagerDutySettings()
    url = pd.get("events_url", default.events_url)
    hosts = tuple(host.lower() for host in pd.get("allowed_hosts", default.allowed_hosts))
    _check_events_url(url, hosts)
    retry = pd.get("retry", {})
    initial = retry.get("initial_backoff", default.initial_backoff)
    maximum = retry.get("max_backoff", default.max_backoff)
    if initial <= 0 or maximum < initial:
        raise ConfigError("config: pagerduty.retry: need 0 < initial_backoff ≤ max_backoff")
    if pd.get("api_timeout", default.api_timeout) <= 0 or pd.get("connect_timeout", default.connect_timeout) <= 0:
        raise ConfigError("config: pagerduty.api_timeout: timeouts must be positive")
    # api_token is refused while reading, so every other key is a PagerDutySettings field
    return PagerDutySettings(events_url=url, allowed_hosts=hosts, initial_backoff=initial, max_backoff=maximum,
                             **pd.get("circuit_breaker", {}),
                             **_except(pd, "events_url", "allowed_hosts", "retry", "circuit_breaker"))


def _outbox(outbox: OutboxFile, pd: PagerDutySettings) -> OutboxSettings:
    """``outbox.backend: redis`` needs a server (``url`` or ``sentinels``, not both; Sentinel a
    ``service_name``), and a lease longer than a send may take, or another replica takes a send in flight."""
    given = outbox.get("redis", {})
    # RedisFile's keys are RedisSettings fields; the reader leaves a null value out, so none is None
    redis = RedisSettings(**cast("dict[str, Any]", given))
    if redis.url is not None and redis.sentinels:
        raise ConfigError("config: outbox.redis: give url or sentinels, not both")
    if redis.sentinels and redis.service_name is None:
        raise ConfigError("config: outbox.redis.service_name: required with outbox.redis.sentinels "
                          "(the name Sentinel knows the master by)")
    if redis.service_name is not None and not redis.sentinels:
        raise ConfigError("config: outbox.redis.service_name: only used with outbox.redis.sentinels")
    if outbox.get("backend") == "redis":
        if redis.url is None and not redis.sentinels:
            raise ConfigError("config: outbox.redis.url: required with outbox.backend: redis "
                              "(or outbox.redis.sentinels and service_name)")
        if redis.lease <= pd.api_timeout + pd.connect_timeout:
            raise ConfigError(
                f"config: outbox.redis.lease: must be longer than pagerduty.api_timeout + connect_timeout "
                f"({pd.api_timeout + pd.connect_timeout:g}s): a send still in flight would be taken by another "
                "replica and sent twice")
    return OutboxSettings(**_except(outbox, "redis"), redis=redis)


def _check_events_url(url: str, hosts: tuple[str, ...]) -> None:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise ConfigError(f"config: pagerduty.events_url: expected an https:// URL, got {url!r}")
    if host not in hosts:
        raise ConfigError(
            f"config: pagerduty.events_url: host {host!r} is not in pagerduty.allowed_hosts ({', '.join(hosts)})"
        )
    if parts.scheme == "http" and not _is_loopback(host):
        raise ConfigError(f"config: pagerduty.events_url: plain http is only allowed for loopback hosts, got {url!r}")


def _auth(auth: AuthFile, security: SecuritySettings, server: ServerSettings) -> AuthSettings:
    jwt = auth.get("jwt")
    if jwt is not None and jwt.public_key is None:  # HS*: verified with security.jwt_secret
        algorithms = ", ".join(jwt.algorithms)
        if security.jwt_secret is None:
            raise ConfigError(f"config: auth.jwt: {algorithms} needs security.jwt_secret")
        need = max(_HS_MIN_BYTES[a] for a in jwt.algorithms)
        if len(security.jwt_secret.reveal().encode()) < need:
            raise ConfigError(f"config: security.jwt_secret: {algorithms} needs a secret of at least {need} bytes")
    mtls = MTLSSettings(**auth["mtls"]) if "mtls" in auth else None
    if mtls is not None and (server.tls is None or server.tls.client_ca_file is None
                             or server.tls.client_auth == "none"):
        raise ConfigError("config: auth.mtls: needs server.tls with a client_ca_file "
                          "(and client_auth optional or require)")
    bearer = (*auth.get("bearer_tokens", ()), *(auth.get("bearer_tokens_file") or ()))
    admin = (*auth.get("admin_tokens", ()), *(auth.get("admin_tokens_file") or ()))
    basic = auth.get("basic", ())
    configured = {"bearer": bearer, "basic": basic, "jwt": jwt, "mtls": mtls, "admin_token": admin}
    return AuthSettings(bearer_tokens=bearer, basic=basic, jwt=jwt, mtls=mtls, admin_tokens=admin,
                        endpoints=_endpoints(auth.get("endpoints", {}), configured))


def _endpoints(given: Mapping[str, Any], configured: Mapping[str, object]) -> dict[str, tuple[str, ...]]:
    """Endpoint group → the methods it accepts, each known and configured (in the order given, once)."""
    endpoints: dict[str, tuple[str, ...]] = {}
    for group, names in given.items():
        for name in names:
            if name not in AUTH_METHODS:
                raise ConfigError(
                    f"config: auth.endpoints.{group}: unknown method {name!r} (known: {', '.join(AUTH_METHODS)})")
            if not configured[name]:
                raise ConfigError(f"config: auth.endpoints.{group}: method {name!r} is not configured under auth")
        endpoints[group] = tuple(dict.fromkeys(names))
    return endpoints


def _except(section: Mapping[str, Any], *names: str) -> dict[str, Any]:
    """The keys of ``section`` the file gives, but ``names``."""
    return {k: v for k, v in section.items() if k not in names}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
