"""The Redis client of the outbox: from ``outbox.redis``, with a pool, timeouts and bounded retries,
and Redis errors turned into :class:`~receiver.errors.OutboxUnavailable` at this boundary.

``url`` is ``redis://``, ``rediss://`` (TLS, certificates checked against the system's CAs) or
``unix://``; with ``sentinels`` the client asks Sentinel for ``service_name``'s master and
follows a failover. A command that meets a connection error or a timeout is retried three
times with jittered exponential backoff (8 ms to 0.5 s); after that the outbox is unavailable:
intake answers 503, /readyz says why, the dispatcher waits and tries again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff

from receiver.errors import OutboxUnavailable
from receiver.settings.model import RedisSettings

__all__ = ["Client", "Pipe", "connect", "unavailable", "where"]

# redis-py's asyncio client is typed with the sync client's unions (``Awaitable[T] | T``) and untyped
# pipeline methods; the outbox's modules hold it as Any and its tests check what each command returns.
Client = Any
Pipe = Any

_RETRIES = 3
_MAX_CONNECTIONS = 64


def where(settings: RedisSettings) -> str:
    """The server, as errors name it (a URL never holds a password: settings refuse one)."""
    if settings.sentinels:
        hosts = ",".join(f"{h}:{p}" for h, p in settings.sentinels)
        return f"sentinel {settings.service_name}@{hosts}"
    return settings.url or "?"


def connect(settings: RedisSettings) -> tuple[Client, Callable[[], Awaitable[None]]]:
    """A client with its own connection pool (nothing is connected until the first command), and what closes it
    (with Sentinel, the connections to the sentinels too)."""
    common: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.socket_timeout,
        "retry": Retry(ExponentialWithJitterBackoff(cap=0.512, base=0.008), _RETRIES),
        "retry_on_error": [rx.ConnectionError, rx.TimeoutError],
        "health_check_interval": 30,
        "username": settings.username,
        "password": settings.password.reveal() if settings.password is not None else None,
    }
    if settings.sentinels:
        sentinel = Sentinel(list(settings.sentinels), sentinel_kwargs={  # type: ignore[no-untyped-call]
            "socket_timeout": settings.socket_timeout, "socket_connect_timeout": settings.socket_timeout})
        assert settings.service_name is not None  # settings require it with sentinels
        client: Client = sentinel.master_for(settings.service_name, max_connections=_MAX_CONNECTIONS, **common)

        async def close() -> None:
            await client.aclose()
            for s in sentinel.sentinels:
                await s.aclose()

        return client, close
    assert settings.url is not None  # settings require url or sentinels
    url_client: Client = Redis.from_url(settings.url, max_connections=_MAX_CONNECTIONS, **common)
    return url_client, url_client.aclose


@contextlib.contextmanager
def unavailable(what: str) -> Iterator[None]:
    """Any Redis error inside becomes :class:`OutboxUnavailable` naming ``what`` failed (WatchError excepted:
    the transactions retry it themselves)."""
    try:
        yield
    except rx.WatchError:
        raise
    except (rx.RedisError, OSError) as exc:
        raise OutboxUnavailable(f"Redis outbox: {what} failed: {type(exc).__name__}: {str(exc)[:300]}") from exc
