"""The public API of ``receiver`` is exactly what its ``__all__`` says, and importing it stays cheap."""

from __future__ import annotations

import importlib
import subprocess
import sys

import receiver

PUBLIC = [
    "BreakerState", "CircuitBreaker", "CircuitOpenError", "ConfigError", "DecryptError", "Deps", "Keyring",
    "PdrelayError", "RateLimit", "RateLimiter", "Secret", "Settings", "__version__", "create_app",
    "generate_key", "load_settings",
]


def test_receiver_exports_exactly_its_public_api() -> None:
    """__all__ is the pinned, sorted list; each name resolves to the object of the module it lives in."""
    assert receiver.__all__ == sorted(PUBLIC)
    assert sorted(dir(receiver)) == sorted(PUBLIC)
    for name in PUBLIC:
        value = getattr(receiver, name)
        if name != "__version__":
            home = importlib.import_module(value.__module__)
            assert getattr(home, name) is value, name
    assert receiver.__version__ == importlib.metadata.version("pdrelay")


def test_an_unknown_name_is_an_attribute_error() -> None:
    """Anything not exported is refused like a missing attribute."""
    try:
        receiver.Dispatcher  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert str(exc) == "module 'receiver' has no attribute 'Dispatcher'"
    else:
        raise AssertionError("receiver.Dispatcher resolved")


def test_the_documented_uses_work() -> None:
    """The breaker as decorator and context manager, and keyring tokens, as the package docstring shows them."""
    from receiver import CircuitBreaker, CircuitOpenError, Keyring, generate_key

    keyring = Keyring.from_keys([generate_key()])
    token = keyring.encrypt("s3cret", context="my-app")
    assert token.startswith("pdr1.") and keyring.decrypt(token, context="my-app") == "s3cret"
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=60)

    @breaker
    async def fails() -> None:
        raise OSError("down")

    import asyncio

    async def run() -> list[str]:
        seen = []
        for _ in range(2):
            try:
                await fails()
            except OSError:
                seen.append("failed")
            except CircuitOpenError:
                seen.append("refused")
        try:
            async with breaker:
                pass
        except CircuitOpenError:
            seen.append("refused")
        return seen

    assert asyncio.run(run()) == ["failed", "refused", "refused"]


def test_importing_receiver_loads_no_server_code() -> None:
    """`import receiver` (what every CLI command pays) imports neither aiohttp nor the outbox."""
    code = ("import sys, receiver; "
            "print(sorted(m for m in ('aiohttp', 'receiver.app', 'receiver.outbox') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
