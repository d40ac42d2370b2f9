"""Inbound authentication: who may call which endpoint.

An :class:`Authenticator`, built once from :class:`~receiver.settings.AuthSettings`, turns the
``Authorization`` header (or the verified client certificate) into an identity with rights:

- ``bearer``: ``Bearer <token>``, a token of ``auth.bearer_tokens`` → ``bearer:<8 hex>``; intake, events
- ``admin_token``: ``Bearer <token>``, a token of ``auth.admin_tokens`` → ``admin:<8 hex>``; all groups
- ``basic``: ``Basic base64(user:password)`` of ``auth.basic`` → ``basic:<user>``; intake, events
- ``jwt``: ``Bearer <header.payload.signature>`` (not a configured token) → ``jwt:<sub or iss>``;
  bound to ``auth.jwt.audience`` and ``issuer`` (both required); the groups whose configured scope
  (``pdrelay:intake``, ``pdrelay:events``, ``pdrelay:admin``) the ``scope_claim`` claim carries,
  intake and events when it is absent
- ``mtls``: the client certificate the TLS layer verified → ``mtls:<subject CN>``; intake, events,
  and admin for ``auth.mtls.admin_subjects``

No presented credential and no configured secret ever appears in an answer, a log line, a metric
label or an exception message: refusals carry a fixed message and a reason from the closed set
:data:`REFUSAL_REASONS`. :func:`auth_middleware` installs it in aiohttp and reports each decision
to a callback (the app counts it and writes the audit log; this package imports neither).

Modules: :mod:`~receiver.auth.outcomes` (identities, refusals, reasons), :mod:`~receiver.auth.methods`
(the :class:`Authenticator` and its constant-time credential checks), :mod:`~receiver.auth.jwt`
(JWT verification), :mod:`~receiver.auth.middleware` (endpoint groups, the middleware, its
answers). The listener's TLS context and client certificates are in :mod:`receiver.tls`.
"""

from __future__ import annotations

from receiver.auth.methods import Authenticator
from receiver.auth.middleware import GROUP_BY_PATH, IDENTITY, OPEN_PATHS, auth_middleware, identity_of
from receiver.auth.outcomes import REFUSAL_REASONS, AuthDecision, Identity, Refusal

__all__ = [
    "GROUP_BY_PATH",
    "IDENTITY",
    "OPEN_PATHS",
    "REFUSAL_REASONS",
    "AuthDecision",
    "Authenticator",
    "Identity",
    "Refusal",
    "auth_middleware",
    "identity_of",
]
