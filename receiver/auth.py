"""Inbound authentication: who may call which endpoint.

Endpoints fall into three groups (``intake``, ``events``, ``admin``, see :data:`GROUP_BY_PATH`);
``/healthz``, ``/readyz`` and ``/metrics`` stay open for probes and scrapes, and any other path
counts as ``admin`` (the strictest group), so a route added later is never open by accident.

An :class:`Authenticator`, built once from :class:`~receiver.settings.AuthSettings`, turns the
``Authorization`` header (or the verified client certificate) into an identity with rights:

- ``bearer``: ``Bearer <token>``, a token of ``auth.bearer_tokens`` → ``bearer:<8 hex>``; intake, events
- ``admin_token``: ``Bearer <token>``, a token of ``auth.admin_tokens`` → ``admin:<8 hex>``; all groups
- ``basic``: ``Basic base64(user:password)`` of ``auth.basic`` → ``basic:<user>``; intake, events
- ``jwt``: ``Bearer <header.payload.signature>`` (not a configured token) → ``jwt:<sub or iss>``;
  the groups named by the ``scope_claim`` claim, intake and events when it is absent
- ``mtls``: the client certificate the TLS layer verified → ``mtls:<subject CN>``; intake, events,
  and admin for ``auth.mtls.admin_subjects``

``<8 hex>`` is the start of the SHA-256 of the token: it tells tokens apart in logs without
revealing them. Tokens and passwords are compared with :func:`hmac.compare_digest` on SHA-256
digests against *every* configured value, so neither the time taken nor an early exit tells which
one matched or how long it is. No presented credential and no configured secret ever appears in
an answer, a log line, a metric label or an exception message: refusals carry a fixed message
and a reason from the closed set :data:`REFUSAL_REASONS`.

Answers: ``401`` with ``WWW-Authenticate`` naming each scheme the group accepts when the
credential is missing or invalid, ``403`` when a valid identity lacks the group's right, ``400``
when a credential is put in the query string (it is not read).

:func:`auth_middleware` installs it in aiohttp and reports each decision to a callback (the app
counts it and writes the audit log; this module imports neither). :func:`server_ssl_context` builds
the server's TLS context, with client certificates for mTLS.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

import jwt
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from receiver.errors import ConfigError
from receiver.settings import (
    AUTH_METHODS,
    ENDPOINT_GROUPS,
    AuthSettings,
    SecuritySettings,
    TLSSettings,
)

__all__ = [
    "GROUP_BY_PATH",
    "IDENTITY",
    "OPEN_PATHS",
    "REFUSAL_REASONS",
    "AuthDecision",
    "Authenticator",
    "Identity",
    "PeerCertificate",
    "Refusal",
    "auth_middleware",
    "identity_of",
    "server_ssl_context",
]

REALM = "pdrelay"
ANONYMOUS = "anonymous"

OPEN_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
GROUP_BY_PATH: Final[Mapping[str, str]] = {
    "/v1/alertmanager": "intake",
    "/v1/events": "events",
    "/-/reload": "admin",
    "/status": "admin",
}
DEFAULT_GROUP = "admin"  # every path neither open nor listed

RefusalReason = Literal[
    "missing",                # no credential at all
    "malformed",              # an Authorization header, Basic value or JWT that cannot be parsed
    "unsupported_scheme",     # neither Bearer nor Basic
    "method_not_accepted",    # a credential of a method this endpoint group does not accept
    "invalid_token",          # a bearer token that is neither configured nor a JWT
    "invalid_credentials",    # Basic username / password wrong
    "expired",                # JWT exp passed (beyond leeway)
    "not_yet_valid",          # JWT nbf / iat in the future (beyond leeway)
    "wrong_audience",
    "wrong_issuer",
    "bad_signature",
    "algorithm_not_allowed",  # JWT alg not in auth.jwt.algorithms (``none`` never is)
    "missing_claim",          # JWT without exp
    "credentials_in_query",   # access_token=… and friends in the URL: refused, not read
    "forbidden",              # valid identity without the group's right
    "subject_not_allowed",    # client certificate subject not in auth.mtls.subjects
]
REFUSAL_REASONS: Final[tuple[str, ...]] = get_args(RefusalReason)

_INTAKE_EVENTS: Final = frozenset({"intake", "events"})
_ALL_GROUPS: Final = frozenset(ENDPOINT_GROUPS)
_HEADER_METHODS: Final = frozenset({"bearer", "admin_token", "jwt", "basic"})
_BEARER_METHODS: Final = frozenset({"bearer", "admin_token", "jwt"})
# Query parameters that carry credentials by convention (RFC 6750 §2.3 and common APIs); names only.
_QUERY_CREDENTIALS: Final = frozenset({
    "access_token", "token", "bearer", "jwt", "id_token", "api_key", "apikey", "api-key", "key",
    "auth", "authorization", "password", "passwd", "secret",
})
_IDENTITY_MAX = 128
_MISSING_CLAIM_REASONS: Final[Mapping[str, RefusalReason]] = {"aud": "wrong_audience", "iss": "wrong_issuer"}

_MESSAGES: Final[Mapping[str, str]] = {
    "missing": "authentication required",
    "malformed": "malformed Authorization header",
    "unsupported_scheme": "unsupported authorization scheme",
    "method_not_accepted": "this kind of credential is not accepted for this endpoint",
    "invalid_token": "invalid bearer token",
    "invalid_credentials": "invalid username or password",
    "expired": "token expired",
    "not_yet_valid": "token not yet valid",
    "wrong_audience": "token audience does not match",
    "wrong_issuer": "token issuer does not match",
    "bad_signature": "token signature does not verify",
    "algorithm_not_allowed": "token algorithm not allowed",
    "missing_claim": "token lacks a required claim",
    "credentials_in_query": "credentials in the URL are refused (and were not read): "
                            "send them in the Authorization header",
    "forbidden": "this identity may not use this endpoint",
    "subject_not_allowed": "client certificate subject is not allowed",
}


# --------------------------------------------------------------------------- request key

if TYPE_CHECKING or hasattr(web, "RequestKey"):
    IDENTITY = web.RequestKey("pdrelay_identity", str)
else:  # aiohttp < 3.14
    IDENTITY = "pdrelay_identity"


def identity_of(request: web.BaseRequest) -> str:
    """The authenticated caller of ``request``: ``bearer:1a2b3c4d``, ``jwt:ci-bot``… or ``anonymous``."""
    found = request.get(IDENTITY)
    return found if isinstance(found, str) else ANONYMOUS


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class AuthDecision:
    """What the middleware decided for one request to a protected endpoint.

    ``method`` is the method that authenticated (or was tried), ``None`` when no credential came;
    ``identity`` is set whenever a credential was valid (also for a 403); ``reason`` is ``"ok"``
    when allowed, else one of :data:`REFUSAL_REASONS`. Nothing in it is secret.
    """

    allowed: bool
    status: int
    group: str
    method: str | None
    identity: str | None
    reason: str
    remote: str | None


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """A client certificate the TLS layer verified against ``server.tls.client_ca_file``."""

    common_name: str | None
    subject: str  # RFC 4514, most specific attribute first

    @classmethod
    def from_der(cls, der: bytes) -> PeerCertificate:
        name = x509.load_der_x509_certificate(der).subject
        cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = cns[0].value if cns else None
        return cls(common_name=cn if isinstance(cn, str) else None, subject=name.rfc4514_string())


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller and the endpoint groups it may use."""

    name: str
    method: str
    rights: frozenset[str]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused: its status, reason, and what is known of the caller (never a credential)."""

    status: int
    reason: RefusalReason
    method: str | None = None
    identity: str | None = None
    token_error: bool = False  # RFC 6750: error="invalid_token" on the Bearer challenge


def _sha256(data: str) -> bytes:
    return hashlib.sha256(data.encode("utf-8", "surrogateescape")).digest()


def _clean(value: str) -> str:
    """An identity part that is safe to log: printable, bounded."""
    printable = "".join(c if c.isprintable() else "?" for c in value)
    return printable[:_IDENTITY_MAX]


class Authenticator:
    """Decides, per endpoint group, whether a request's credential is good enough."""

    def __init__(self, auth: AuthSettings, security: SecuritySettings) -> None:
        self.enabled = auth.enabled
        present = {
            "bearer": bool(auth.bearer_tokens), "basic": bool(auth.basic), "jwt": auth.jwt is not None,
            "mtls": auth.mtls is not None, "admin_token": bool(auth.admin_tokens),
        }
        configured = tuple(m for m in AUTH_METHODS if present[m])
        # A method named in auth.endpoints but not configured accepts nothing (settings refuse it anyway).
        self._accepts: dict[str, tuple[str, ...]] = {
            g: tuple(m for m in auth.endpoints.get(g, configured) if present.get(m, False)) for g in ENDPOINT_GROUPS
        }
        # Every configured token, bearer and admin alike, is compared for every presented token.
        self._tokens: tuple[bytes, ...] = tuple(_sha256(t.reveal()) for t in (*auth.bearer_tokens, *auth.admin_tokens))
        self._n_bearer = len(auth.bearer_tokens)
        self._basic = tuple((_sha256(b.username), _sha256(b.password.reveal()), b.username) for b in auth.basic)
        self._jwt = auth.jwt
        self._jwt_key: Any = None
        if auth.jwt is not None:
            if auth.jwt.public_key is not None:
                self._jwt_key = serialization.load_pem_public_key(auth.jwt.public_key.encode())
            elif security.jwt_secret is not None:
                self._jwt_key = security.jwt_secret.reveal().encode()
        self._mtls = auth.mtls

    # what is configured ---------------------------------------------------------------------------
    def describe(self) -> dict[str, list[str]]:
        """Group → accepted methods, for the start-up log."""
        return {g: list(self._accepts[g]) for g in ENDPOINT_GROUPS}

    @staticmethod
    def group_of(path: str) -> str | None:
        """The endpoint group of ``path``; ``None`` for the open probe and scrape paths."""
        if path in OPEN_PATHS:
            return None
        return GROUP_BY_PATH.get(path, DEFAULT_GROUP)

    def _challenge(self, group: str, error: str | None = None) -> list[str]:
        accepted = set(self._accepts[group])
        out: list[str] = []
        if accepted & _BEARER_METHODS:
            bearer = f'Bearer realm="{REALM}"'
            if error is not None:
                bearer += f', error="{error}"'
            out.append(bearer)
        if "basic" in accepted:
            out.append(f'Basic realm="{REALM}", charset="UTF-8"')
        return out

    # deciding -------------------------------------------------------------------------------------
    def authenticate(
        self,
        group: str,
        authorization: Sequence[str],
        peer: Callable[[], PeerCertificate | None] = lambda: None,
    ) -> Identity | Refusal:
        """Check the ``Authorization`` header values (normally zero or one) and the client certificate."""
        accepted = self._accepts.get(group, ())
        header_methods = _HEADER_METHODS.intersection(accepted)
        if len(authorization) > 1:
            return Refusal(401, "malformed")
        if authorization and header_methods:
            found = self._from_header(authorization[0], accepted)
        elif "mtls" in accepted and (cert := peer()) is not None:
            found = self._from_certificate(cert)
        elif authorization:
            return Refusal(401, "method_not_accepted")
        else:
            return Refusal(401, "missing")
        if isinstance(found, Refusal):
            return found
        if group not in found.rights:
            return Refusal(403, "forbidden", found.method, found.name)
        return found

    def _from_header(self, value: str, accepted: Sequence[str]) -> Identity | Refusal:
        scheme, _, credentials = value.strip().partition(" ")
        credentials = credentials.strip()
        match scheme.lower():
            case "bearer":
                if not credentials:
                    return Refusal(401, "malformed", token_error=True)
                return self._bearer(credentials, accepted)
            case "basic":
                if "basic" not in accepted:
                    return Refusal(401, "method_not_accepted", "basic")
                return self._basic_auth(credentials)
            case _:
                return Refusal(401, "unsupported_scheme")

    def _bearer(self, token: str, accepted: Sequence[str]) -> Identity | Refusal:
        digest = _sha256(token)
        # No early exit: every configured digest is compared, whatever matches first.
        hits = [hmac.compare_digest(digest, known) for known in self._tokens]
        tag = digest.hex()[:8]
        if any(hits[self._n_bearer:]):
            if "admin_token" not in accepted:
                return Refusal(401, "method_not_accepted", "admin_token", f"admin:{tag}")
            return Identity(f"admin:{tag}", "admin_token", _ALL_GROUPS)
        if any(hits[: self._n_bearer]):
            if "bearer" not in accepted:
                return Refusal(401, "method_not_accepted", "bearer", f"bearer:{tag}")
            return Identity(f"bearer:{tag}", "bearer", _INTAKE_EVENTS)
        if self._jwt is not None and token.count(".") == 2:
            if "jwt" not in accepted:
                return Refusal(401, "method_not_accepted", "jwt")
            return self._jwt_auth(token)
        method = next((m for m in ("bearer", "admin_token", "jwt") if m in accepted), None)
        if method is None:  # a Bearer credential where only Basic is accepted
            return Refusal(401, "method_not_accepted")
        return Refusal(401, "invalid_token", method, token_error=True)

    def _basic_auth(self, value: str) -> Identity | Refusal:
        try:
            decoded = base64.b64decode(value.encode("ascii"), validate=True).decode("utf-8")
        except (UnicodeError, binascii.Error, ValueError):
            return Refusal(401, "malformed", "basic")
        username, colon, password = decoded.partition(":")
        if not colon:
            return Refusal(401, "malformed", "basic")
        user_digest, password_digest = _sha256(username), _sha256(password)
        # Both halves of every configured credential are compared, always.
        hits = [
            hmac.compare_digest(user_digest, u) & hmac.compare_digest(password_digest, p)
            for u, p, _ in self._basic
        ]
        for hit, (_, _, name) in zip(hits, self._basic, strict=True):
            if hit:
                return Identity(f"basic:{_clean(name)}", "basic", _INTAKE_EVENTS)
        return Refusal(401, "invalid_credentials", "basic")

    def _jwt_auth(self, token: str) -> Identity | Refusal:
        cfg = self._jwt
        assert cfg is not None

        def refuse(reason: RefusalReason) -> Refusal:
            return Refusal(401, reason, "jwt", token_error=True)

        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._jwt_key,
                algorithms=list(cfg.algorithms),
                audience=cfg.audience,
                issuer=cfg.issuer,
                leeway=cfg.leeway,
                options={
                    "require": ["exp"],
                    "verify_aud": cfg.audience is not None,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.ExpiredSignatureError:
            return refuse("expired")
        except jwt.ImmatureSignatureError:
            return refuse("not_yet_valid")
        except jwt.InvalidAudienceError:
            return refuse("wrong_audience")
        except jwt.InvalidIssuerError:
            return refuse("wrong_issuer")
        except jwt.InvalidAlgorithmError:
            return refuse("algorithm_not_allowed")
        except jwt.MissingRequiredClaimError as exc:
            return refuse(_MISSING_CLAIM_REASONS.get(exc.claim, "missing_claim"))
        except jwt.InvalidSignatureError:  # before DecodeError, its base class
            return refuse("bad_signature")
        except jwt.DecodeError:
            return refuse("malformed")
        except jwt.PyJWTError:  # any other invalid claim (sub, jti, iat type…) or key trouble
            return refuse("invalid_token")
        scope = claims.get(cfg.scope_claim)
        if scope is None:
            rights = _INTAKE_EVENTS
        elif isinstance(scope, str):
            rights = _ALL_GROUPS.intersection(scope.split())
        elif isinstance(scope, list) and all(isinstance(s, str) for s in scope):
            rights = _ALL_GROUPS.intersection(scope)
        else:
            return refuse("malformed")
        who = next((c for c in (claims.get("sub"), claims.get("iss")) if isinstance(c, str) and c), "unknown")
        return Identity(f"jwt:{_clean(who)}", "jwt", rights)

    def _from_certificate(self, cert: PeerCertificate) -> Identity | Refusal:
        mtls = self._mtls
        assert mtls is not None
        names = {cert.subject} | ({cert.common_name} if cert.common_name else set())
        name = f"mtls:{_clean(cert.common_name or cert.subject)}"
        admin = not names.isdisjoint(mtls.admin_subjects)
        if mtls.subjects and not admin and names.isdisjoint(mtls.subjects):
            return Refusal(403, "subject_not_allowed", "mtls", name)
        return Identity(name, "mtls", _ALL_GROUPS if admin else _INTAKE_EVENTS)

    # answering ------------------------------------------------------------------------------------
    def refusal_response(self, group: str, refusal: Refusal) -> web.Response:
        headers: dict[str, str] = {}
        if refusal.status == 401:
            challenges = self._challenge(group, "invalid_token" if refusal.token_error else None)
            if challenges:
                headers["WWW-Authenticate"] = ", ".join(challenges)
        elif refusal.status == 400:
            headers["WWW-Authenticate"] = f'Bearer realm="{REALM}", error="invalid_request"'
        elif refusal.method in _BEARER_METHODS:
            headers["WWW-Authenticate"] = f'Bearer realm="{REALM}", error="insufficient_scope", scope="{group}"'
        return web.json_response({"error": _MESSAGES[refusal.reason]}, status=refusal.status, headers=headers)


# --------------------------------------------------------------------------- aiohttp

def _peer_certificate(request: web.Request) -> PeerCertificate | None:
    """The client certificate, when the TLS layer asked for one and verified it."""
    transport = request.transport
    if transport is None or not transport.get_extra_info("peercert"):  # empty unless verified
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return PeerCertificate.from_der(der) if der else None


def auth_middleware(authenticator: Authenticator, on_decision: Callable[[AuthDecision], None]) -> Middleware:
    """An aiohttp middleware that authenticates every request to a protected endpoint.

    ``on_decision`` is called once per protected request, allowed or refused, before the
    answer goes out. The identity is stored under :data:`IDENTITY` (see :func:`identity_of`).
    """

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        group = authenticator.group_of(request.path)
        if group is None or not authenticator.enabled:
            return await handler(request)
        outcome: Identity | Refusal
        if not _QUERY_CREDENTIALS.isdisjoint(k.lower() for k in request.rel_url.query):
            outcome = Refusal(400, "credentials_in_query")
        else:
            outcome = authenticator.authenticate(
                group, request.headers.getall("Authorization", []), lambda: _peer_certificate(request)
            )
        if isinstance(outcome, Refusal):
            on_decision(AuthDecision(False, outcome.status, group, outcome.method, outcome.identity,
                                     outcome.reason, request.remote))
            return authenticator.refusal_response(group, outcome)
        on_decision(AuthDecision(True, 200, group, outcome.method, outcome.name, "ok", request.remote))
        request[IDENTITY] = outcome.name
        return await handler(request)

    return authenticate


# --------------------------------------------------------------------------- TLS


def server_ssl_context(tls: TLSSettings) -> ssl.SSLContext:
    """The listener's TLS context: TLS ≥ 1.2, the server's certificate, client certificates if configured.

    Each file is checked on its own first, so a bad one gives a :class:`ConfigError` naming its key.
    """
    _check_certificates(tls.cert_file, "server.tls.cert_file")
    _check_private_key(tls.key_file)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except ssl.SSLError as exc:
        raise ConfigError(f"config: server.tls.key_file: {tls.key_file} does not fit the certificate in "
                          f"server.tls.cert_file ({exc.reason or 'cannot load'})") from None
    if tls.client_ca_file is not None and tls.client_auth != "none":
        _check_certificates(tls.client_ca_file, "server.tls.client_ca_file")
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except ssl.SSLError as exc:
            raise ConfigError(f"config: server.tls.client_ca_file: cannot load {tls.client_ca_file} "
                              f"({exc.reason or 'invalid'})") from None
        ctx.verify_mode = ssl.CERT_REQUIRED if tls.client_auth == "require" else ssl.CERT_OPTIONAL
    return ctx


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config: {key}: cannot read {path}: {exc.strerror}") from None


def _check_certificates(path: Path, key: str) -> None:
    try:
        x509.load_pem_x509_certificates(_read(path, key))
    except ValueError:
        raise ConfigError(f"config: {key}: {path} holds no PEM certificate") from None


def _check_private_key(path: Path) -> None:
    key = "server.tls.key_file"
    try:
        serialization.load_pem_private_key(_read(path, key), password=None)
    except TypeError:
        raise ConfigError(f"config: {key}: {path} is encrypted; give an unencrypted private key") from None
    except ValueError:
        raise ConfigError(f"config: {key}: {path} holds no PEM private key") from None
