"""What an auth check concludes: an :class:`Identity` with rights, or a :class:`Refusal` with a reason.

The reasons form the closed set :data:`REFUSAL_REASONS` (metrics create one label per reason at
start), each with the fixed message the answer carries; :class:`AuthDecision` is what the
middleware reports for each protected request. Nothing here holds a credential.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, get_args

from receiver.settings import ENDPOINT_GROUPS

__all__ = [
    "ALL_GROUPS",
    "INTAKE_EVENTS",
    "MESSAGES",
    "REFUSAL_REASONS",
    "AuthDecision",
    "Identity",
    "Refusal",
    "RefusalReason",
    "clean_name",
]

INTAKE_EVENTS: Final = frozenset({"intake", "events"})
ALL_GROUPS: Final = frozenset(ENDPOINT_GROUPS)
_IDENTITY_MAX = 128

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

MESSAGES: Final[Mapping[str, str]] = {
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


def clean_name(value: str) -> str:
    """An identity part that is safe to log: printable, bounded."""
    printable = "".join(c if c.isprintable() else "?" for c in value)
    return printable[:_IDENTITY_MAX]
