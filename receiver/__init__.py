"""pdrelay: the Alertmanager → PagerDuty sidecar service, and the parts of it meant for your own code.

What is exported here is the public API; everything else is internal and may change::

    from receiver import CircuitBreaker, Keyring, RateLimit, RateLimiter

    breaker = CircuitBreaker(failure_threshold=5, recovery_timeout=60)

    @breaker                       # or: async with breaker: ...
    async def call_pagerduty() -> None: ...

    keyring = Keyring.from_keys([generate_key()])
    token = keyring.encrypt("s3cret", context="my-app")   # "pdr1.…"; decrypt(token, context=...) gives it back

Names are resolved on first use (PEP 562), so ``import receiver`` stays cheap: the CLI's
``--help`` and ``keygen`` do not pay for aiohttp or the outbox.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from receiver.app import Deps, create_app
    from receiver.breaker import BreakerState, CircuitBreaker, CircuitOpenError
    from receiver.crypto import DecryptError, Keyring, generate_key
    from receiver.errors import ConfigError, PdrelayError
    from receiver.limiter import RateLimit, RateLimiter
    from receiver.secret import Secret
    from receiver.settings import Settings, load_settings

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConfigError",
    "DecryptError",
    "Deps",
    "Keyring",
    "PdrelayError",
    "RateLimit",
    "RateLimiter",
    "Secret",
    "Settings",
    "__version__",
    "create_app",
    "generate_key",
    "load_settings",
]

_HOMES = {
    "BreakerState": "receiver.breaker",
    "CircuitBreaker": "receiver.breaker",
    "CircuitOpenError": "receiver.breaker",
    "ConfigError": "receiver.errors",
    "DecryptError": "receiver.crypto",
    "Deps": "receiver.app",
    "Keyring": "receiver.crypto",
    "PdrelayError": "receiver.errors",
    "RateLimit": "receiver.limiter",
    "RateLimiter": "receiver.limiter",
    "Secret": "receiver.secret",
    "Settings": "receiver.settings",
    "create_app": "receiver.app",
    "generate_key": "receiver.crypto",
    "load_settings": "receiver.settings",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        return version("pdrelay")
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'receiver' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
