"""``outbox.redis``: what the file may say about the Redis outbox, and every refusal with its exact message."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiver.errors import ConfigError
from receiver.secret import Secret
from receiver.settings import settings_from_mapping
from receiver.settings.model import RedisSettings


def _redis(section: dict[str, object], backend: str = "redis", **pagerduty: object) -> RedisSettings:
    data = {"outbox": {"backend": backend, "redis": section}, "pagerduty": pagerduty}
    return settings_from_mapping(data, environ={"REDIS_PW": "from-env"}).outbox.redis


def test_defaults_and_every_key(tmp_path: Path) -> None:
    """A URL alone takes the defaults; each key is read as its type, the password as a secret."""
    assert _redis({"url": "redis://127.0.0.1:6379"}) == RedisSettings(url="redis://127.0.0.1:6379")
    (tmp_path / "pw").write_text("from-file\n")
    given = {"sentinels": ["10.0.0.1:26379", "[::1]:26380"], "service_name": "mymaster", "username": "pdrelay",
             "password": {"file": str(tmp_path / "pw")}, "key_prefix": "team-a:pd", "wait_replicas": 1,
             "wait_timeout": "500ms", "lease": "1m", "socket_timeout": "2s"}
    assert _redis(given) == RedisSettings(
        sentinels=(("10.0.0.1", 26379), ("::1", 26380)), service_name="mymaster", username="pdrelay",
        password=Secret("from-file"), key_prefix="team-a:pd", wait_replicas=1, wait_timeout=0.5, lease=60.0,
        socket_timeout=2.0)
    assert _redis({"url": "rediss://cache.internal:6380/2", "password": "${REDIS_PW}"}).password == Secret("from-env")
    assert _redis({"url": "unix:///run/redis.sock", "password": {"env": "REDIS_PW"}}).password == Secret("from-env")


def test_the_password_is_among_the_secrets() -> None:
    data = {"outbox": {"backend": "redis", "redis": {"url": "redis://h", "password": "s3cret-pw"}}}
    assert "s3cret-pw" in settings_from_mapping(data, environ={}).secrets()


@pytest.mark.parametrize(("section", "message"), [
    ({}, "config: outbox.redis.url: required with outbox.backend: redis (or outbox.redis.sentinels and "
         "service_name)"),
    ({"url": "http://h:6379"}, "config: outbox.redis.url: expected a redis://, rediss:// or unix:// URL"),
    ({"url": "redis://:hunter2@h:6379"},
     "config: outbox.redis.url: holds a password; give it as outbox.redis.password (a secret) instead"),
    ({"url": "redis://h:99999"}, "config: outbox.redis.url: not a valid URL (Port out of range 0-65535)"),
    ({"url": "redis://h:0"}, "config: outbox.redis.url: port 0 is not a port to connect to"),
    ({"url": "redis:///0"}, "config: outbox.redis.url: the URL names no host"),
    ({"url": "redis://h/cache"}, "config: outbox.redis.url: the path must be a database number (/0), got '/cache'"),
    ({"url": "unix://"}, "config: outbox.redis.url: a unix:// URL needs the socket's path (unix:///run/redis.sock)"),
    ({"url": "redis://h", "key_prefix": "{x}"},
     "config: outbox.redis.key_prefix: 1 to 64 letters, digits, _ . : - (no braces), got '{x}'"),
    ({"url": "redis://h", "sentinels": ["s:26379"], "service_name": "m"},
     "config: outbox.redis: give url or sentinels, not both"),
    ({"sentinels": ["s:26379"]}, "config: outbox.redis.service_name: required with outbox.redis.sentinels "
                                 "(the name Sentinel knows the master by)"),
    ({"url": "redis://h", "service_name": "m"},
     "config: outbox.redis.service_name: only used with outbox.redis.sentinels"),
    ({"sentinels": []}, "config: outbox.redis.sentinels: expected a non-empty list of HOST:PORT"),
    ({"sentinels": ["nope"], "service_name": "m"}, "config: outbox.redis.sentinels[0]: expected HOST:PORT, got 'nope'"),
    ({"url": "redis://h", "wait_replicas": -1}, "config: outbox.redis.wait_replicas: expected an integer ≥ 0, got -1"),
    ({"url": "redis://h", "wait_timeout": "0s"}, "config: outbox.redis.wait_timeout: must be positive"),
    ({"url": "redis://h", "socket_timeout": "soon"},
     "config: outbox.redis.socket_timeout: expected a duration such as 30s or 5m, got 'soon'"),
    ({"url": "redis://h", "password": ""}, "config: outbox.redis.password: is empty"),
    ({"url": "redis://h", "username": " "}, "config: outbox.redis.username: is empty"),
    ({"url": "redis://h", "lease": "15s"},
     "config: outbox.redis.lease: must be longer than pagerduty.api_timeout + connect_timeout (15s): a send "
     "still in flight would be taken by another replica and sent twice"),
    ({"url": "redis://h", "db": 1},
     "config: outbox.redis.db: unknown key (allowed: key_prefix, lease, password, sentinels, service_name, "
     "socket_timeout, url, username, wait_replicas, wait_timeout)"),
])
def test_bad_values_are_refused_naming_the_key(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _redis(section)
    assert str(caught.value) == message


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"outbox": {"backend": "mongo"}}, environ={})
    assert str(caught.value) == "config: outbox.backend: expected sqlite or redis, got 'mongo'"


def test_the_lease_is_checked_against_the_configured_timeouts() -> None:
    assert _redis({"url": "redis://h", "lease": "4s"}, api_timeout="2s", connect_timeout="1s").lease == 4.0
    assert _redis({"url": "redis://h", "lease": "1s"}, backend="sqlite").lease == 1.0  # not used: not checked
