"""Credential checks: which methods each endpoint group accepts, and bearer, admin, basic and mTLS.

An :class:`Authenticator`, built once from :class:`~receiver.settings.AuthSettings`, turns the
``Authorization`` header values (or the client certificate the TLS layer verified) into an
:class:`~receiver.auth.outcomes.Identity` with rights, or a
:class:`~receiver.auth.outcomes.Refusal`. JWTs go to :class:`~receiver.auth.jwt.JWTVerifier`.

Tokens and passwords are compared with :func:`hmac.compare_digest` on SHA-256 digests against
*every* configured value, so neither the time taken nor an early exit tells which one matched or
how long it is. Identities name a token by the start of its SHA-256 (``bearer:1a2b3c4d``), which
tells tokens apart in logs without revealing them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import Final

from receiver.auth.jwt import JWTVerifier
from receiver.auth.outcomes import ALL_GROUPS, INTAKE_EVENTS, Identity, Refusal, clean_name
from receiver.settings import AUTH_METHODS, ENDPOINT_GROUPS, AuthSettings, SecuritySettings
from receiver.tls import PeerCertificate

__all__ = ["BEARER_METHODS", "Authenticator"]

_HEADER_METHODS: Final = frozenset({"bearer", "admin_token", "jwt", "basic"})
BEARER_METHODS: Final = frozenset({"bearer", "admin_token", "jwt"})


def _sha256(data: str) -> bytes:
    """The digest of any text: a lone surrogate (a header byte that is not UTF-8) is encoded, never raised on."""
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).digest()


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
        self._jwt = JWTVerifier(auth.jwt, security) if auth.jwt is not None else None
        self._scopes = dict(auth.jwt.scopes) if auth.jwt is not None else {}
        self._mtls = auth.mtls

    # what is configured ---------------------------------------------------------------------------
    def accepted(self, group: str) -> tuple[str, ...]:
        """The methods ``group`` accepts, in the order of :data:`~receiver.settings.AUTH_METHODS`."""
        return self._accepts.get(group, ())

    def scope_for(self, group: str) -> str | None:
        """The JWT scope that opens ``group`` (named in a 403's challenge); ``None`` without JWT."""
        return self._scopes.get(group)

    def describe(self) -> dict[str, list[str]]:
        """Group → accepted methods, for the start-up log."""
        return {g: list(self._accepts[g]) for g in ENDPOINT_GROUPS}

    # deciding -------------------------------------------------------------------------------------
    def authenticate(
        self,
        group: str,
        authorization: Sequence[str],
        peer: Callable[[], PeerCertificate | None] = lambda: None,
    ) -> Identity | Refusal:
        """Check the ``Authorization`` header values (normally zero or one) and the client certificate."""
        accepted = self.accepted(group)
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
            return Identity(f"admin:{tag}", "admin_token", ALL_GROUPS)
        if any(hits[: self._n_bearer]):
            if "bearer" not in accepted:
                return Refusal(401, "method_not_accepted", "bearer", f"bearer:{tag}")
            return Identity(f"bearer:{tag}", "bearer", INTAKE_EVENTS)
        if self._jwt is not None and token.count(".") == 2:
            if "jwt" not in accepted:
                return Refusal(401, "method_not_accepted", "jwt")
            return self._jwt.verify(token)
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
                return Identity(f"basic:{clean_name(name)}", "basic", INTAKE_EVENTS)
        return Refusal(401, "invalid_credentials", "basic")

    def _from_certificate(self, cert: PeerCertificate) -> Identity | Refusal:
        mtls = self._mtls
        assert mtls is not None
        names = {cert.subject} | ({cert.common_name} if cert.common_name else set())
        name = f"mtls:{clean_name(cert.common_name or cert.subject)}"
        admin = not names.isdisjoint(mtls.admin_subjects)
        if mtls.subjects and not admin and names.isdisjoint(mtls.subjects):
            return Refusal(403, "subject_not_allowed", "mtls", name)
        return Identity(name, "mtls", ALL_GROUPS if admin else INTAKE_EVENTS)
