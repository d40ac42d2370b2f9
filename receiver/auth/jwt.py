"""JWT bearer tokens: signature, claims and scope of one token → an identity or a refusal.

:class:`JWTVerifier` is built once from ``auth.jwt`` (the key: ``public_key`` PEM for RS*/ES*,
else ``security.jwt_secret`` for HS*) and verifies with PyJWT: only the configured algorithms
(``none`` never), ``exp`` required, audience and issuer when configured, ``leeway`` for clock skew,
minimum key lengths enforced. Each PyJWT error maps to one reason of
:data:`~receiver.auth.outcomes.REFUSAL_REASONS`; the token itself is never kept or shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization

from receiver.auth.outcomes import ALL_GROUPS, INTAKE_EVENTS, Identity, Refusal, RefusalReason, clean_name
from receiver.settings import JWTSettings, SecuritySettings

__all__ = ["JWTVerifier"]

_MISSING_CLAIM_REASONS: Final[Mapping[str, RefusalReason]] = {"aud": "wrong_audience", "iss": "wrong_issuer"}


class JWTVerifier:
    """Checks one JWT against ``auth.jwt``; its rights are the groups named by the scope claim."""

    def __init__(self, cfg: JWTSettings, security: SecuritySettings) -> None:
        self._cfg = cfg
        self._key: Any = None
        if cfg.public_key is not None:
            self._key = serialization.load_pem_public_key(cfg.public_key.encode())
        elif security.jwt_secret is not None:
            self._key = security.jwt_secret.reveal().encode()

    def verify(self, token: str) -> Identity | Refusal:
        """``jwt:<sub or iss>`` with the scope's groups (intake and events without one), or why not."""
        cfg = self._cfg

        def refuse(reason: RefusalReason) -> Refusal:
            return Refusal(401, reason, "jwt", token_error=True)

        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
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
            rights = INTAKE_EVENTS
        elif isinstance(scope, str):
            rights = ALL_GROUPS.intersection(scope.split())
        elif isinstance(scope, list) and all(isinstance(s, str) for s in scope):
            rights = ALL_GROUPS.intersection(scope)
        else:
            return refuse("malformed")
        who = next((c for c in (claims.get("sub"), claims.get("iss")) if isinstance(c, str) and c), "unknown")
        return Identity(f"jwt:{clean_name(who)}", "jwt", rights)
