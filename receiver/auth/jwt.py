"""JWT bearer tokens: signature, claims and scope of one token → an identity or a refusal.

:class:`JWTVerifier` is built once from ``auth.jwt`` (the key: ``public_key`` PEM for RS*/ES*,
else ``security.jwt_secret`` for HS*) and verifies with PyJWT: only the configured algorithms
(``none`` never), ``exp``, ``aud`` and ``iss`` required, the audience and issuer always checked
(settings without them are refused: a token issued for another app must not open pdrelay),
``leeway`` for clock skew, minimum key lengths enforced. Each PyJWT error maps to one reason of
:data:`~receiver.auth.outcomes.REFUSAL_REASONS`; the token itself is never kept or shown.

Rights come from the scope claim (a space-separated string or a list): a group opens only with
its configured scope (``pdrelay:intake``, ``pdrelay:events``, ``pdrelay:admin`` by default), so
the bare ``admin`` of another app's token counts for nothing; a token without the claim may
use intake and events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization

from receiver.auth.outcomes import INTAKE_EVENTS, Identity, Refusal, RefusalReason, clean_name
from receiver.errors import ConfigError
from receiver.settings import JWTSettings, SecuritySettings

__all__ = ["JWTVerifier"]

_MISSING_CLAIM_REASONS: Final[Mapping[str, RefusalReason]] = {"aud": "wrong_audience", "iss": "wrong_issuer"}
_REQUIRED_CLAIMS: Final = ["exp", "aud", "iss"]


class JWTVerifier:
    """Checks one JWT against ``auth.jwt``; its rights are the groups whose scope the token carries."""

    def __init__(self, cfg: JWTSettings, security: SecuritySettings) -> None:
        if (unbound := cfg.unbound()) is not None:  # settings built in code skip the loader's check
            raise ConfigError(f"config: auth.jwt.{unbound}")
        self._cfg = cfg
        self._key: Any = None
        if cfg.public_key is not None:
            self._key = serialization.load_pem_public_key(cfg.public_key.encode())
        elif security.jwt_secret is not None:
            self._key = security.jwt_secret.reveal().encode()

    def verify(self, token: str) -> Identity | Refusal:
        """``jwt:<sub or iss>`` with the groups its scopes open (intake and events without a scope), or why not."""
        cfg = self._cfg

        def refuse(reason: RefusalReason) -> Refusal:
            return Refusal(401, reason, "jwt", token_error=True)

        if not token.isascii():  # base64url segments are ASCII: this is no JWT (and PyJWT would raise)
            return refuse("invalid_token")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=list(cfg.algorithms),
                audience=cfg.audience,
                issuer=cfg.issuer,
                leeway=cfg.leeway,
                options={"require": _REQUIRED_CLAIMS, "verify_aud": True, "verify_iss": True,
                         "enforce_minimum_key_length": True},
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
            rights = INTAKE_EVENTS
        elif isinstance(scope, str):
            rights = self._opened_by(scope.split())
        elif isinstance(scope, list) and all(isinstance(s, str) for s in scope):
            rights = self._opened_by(scope)
        else:
            return refuse("malformed")
        who = next((c for c in (claims.get("sub"), claims.get("iss")) if isinstance(c, str) and c), "unknown")
        return Identity(f"jwt:{clean_name(who)}", "jwt", rights)

    def _opened_by(self, scopes: list[str]) -> frozenset[str]:
        """The endpoint groups whose configured scope is one of ``scopes`` (compared exactly)."""
        granted = set(scopes)
        return frozenset(group for group, scope in self._cfg.scopes.items() if scope in granted)
