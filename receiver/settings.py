"""Configuration: ``pdrelay.yaml`` → frozen, validated :class:`Settings`.

Every string value may use ``${ENV_VAR}`` (or ``${ENV_VAR:-fallback}``); every secret
may also be given as ``{file: PATH}`` or ``{env: NAME}``. Secrets are held in
:class:`Secret`, whose ``repr``/``str`` never show the value. An invalid file is refused
with a :class:`~receiver.errors.ConfigError` whose message names the key, e.g.
``config: pagerduty.rate_limit.per_key: expected a positive number, got 'x'``.

With no file, :func:`load_settings` returns the embedded defaults: loopback listener,
SQLite outbox under ``./data``, rules from ``rules/``, no routing key — so pdrelay runs
in dry-run and says so.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from receiver.errors import ConfigError
from receiver.limiter import RateLimit

__all__ = [
    "OutboxSettings",
    "PagerDutySettings",
    "RulesSettings",
    "Secret",
    "ServerSettings",
    "Settings",
    "default_rules_path",
    "load_settings",
    "parse_duration",
    "parse_size",
    "settings_from_mapping",
]

DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
DEFAULT_ALLOWED_HOSTS = ("events.pagerduty.com", "events.eu.pagerduty.com")


class Secret:
    """A string that never shows itself in ``repr``, ``str``, logs or JSON."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 9095
    body_limit: int = 10 * 1024 * 1024
    allow_unauthenticated: bool = False

    @property
    def listen(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PagerDutySettings:
    events_url: str = DEFAULT_EVENTS_URL
    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    routing_keys: Mapping[str, Secret] = field(default_factory=dict)
    dry_run: bool = False
    api_timeout: float = 10.0
    connect_timeout: float = 5.0
    retry_attempts: int = 20
    max_age: float = 24 * 3600.0
    initial_backoff: float = 1.0
    max_backoff: float = 300.0
    resend_interval: float = 4 * 3600.0
    concurrency: int = 16
    rate_limit: RateLimit = field(default_factory=RateLimit)
    backoff_on_429: float = 30.0  # PagerDuty suggests retrying a 429 tens of seconds later
    skip_superseded_triggers: bool = False  # off: PagerDuty hears everything, even a storm's past
    settle_delay: float = 60.0  # a resolve is re-sent this long after, when its trigger ever timed out
    failure_threshold: int = 5
    recovery_timeout: float = 60.0

    @property
    def effective_dry_run(self) -> bool:
        """Dry-run when asked for, or when no routing key is configured at all."""
        return self.dry_run or not self.routing_keys


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    backend: str = "sqlite"
    path: Path = Path("data/outbox.db")


@dataclass(frozen=True, slots=True)
class RulesSettings:
    paths: tuple[Path, ...] = (Path("rules"),)
    watch: bool = False


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    pagerduty: PagerDutySettings = field(default_factory=PagerDutySettings)
    outbox: OutboxSettings = field(default_factory=OutboxSettings)
    rules: RulesSettings = field(default_factory=RulesSettings)
    source: str = "<embedded defaults>"

    def secrets(self) -> list[str]:
        """Every secret value, for redaction checks."""
        return [s.reveal() for s in self.pagerduty.routing_keys.values()]


# --------------------------------------------------------------------------- loading

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2, "GB": 1000**3, "GiB": 1024**3,
}


def load_settings(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a config file; ``None`` gives the embedded defaults."""
    env = os.environ if environ is None else environ
    if path is None:
        return Settings(rules=RulesSettings(paths=(default_rules_path(),)))
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config: cannot read {p}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: {p}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    return settings_from_mapping(data, environ=env, source=str(p), base_dir=p.parent)


def default_rules_path() -> Path:
    """``./rules`` when it exists (a checkout), else the example rules shipped in the package."""
    local = Path("rules")
    return local if local.is_dir() else Path(__file__).parent / "defaults" / "rules.yaml"


def settings_from_mapping(
    data: Any,
    *,
    environ: Mapping[str, str] | None = None,
    source: str = "<mapping>",
    base_dir: Path | None = None,
) -> Settings:
    """Validate an already-parsed config mapping."""
    env = os.environ if environ is None else environ
    r = _Reader(env, base_dir or Path.cwd())
    root = r.mapping(data, "", {"server", "pagerduty", "outbox", "rules", "auth", "security", "audit", "cache"})
    for later in ("auth", "security", "audit", "cache"):
        if root.get(later) not in (None, {}):
            raise ConfigError(f"config: {later}: this section is not supported by this version of pdrelay")
    server = _server(r, root.get("server"))
    pagerduty = _pagerduty(r, root.get("pagerduty"))
    outbox = _outbox(r, root.get("outbox"))
    rules = _rules(r, root.get("rules"))
    if not _is_loopback(server.host) and not server.allow_unauthenticated:
        raise ConfigError(
            f"config: server.listen: {server.listen} is not a loopback address and no auth is configured; "
            "set server.allow_unauthenticated: true to expose pdrelay without authentication"
        )
    return Settings(server=server, pagerduty=pagerduty, outbox=outbox, rules=rules, source=source)


def parse_duration(value: Any, key: str) -> float:
    """``30``, ``1.5``, ``"500ms"``, ``"30s"``, ``"5m"``, ``"4h"``, ``"1d"`` → seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"config: {key}: expected a duration such as 30s or 5m, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ConfigError(f"config: {key}: expected a duration such as 30s or 5m, got {value!r}")
    if seconds < 0:
        raise ConfigError(f"config: {key}: must not be negative, got {value!r}")
    return seconds


def parse_size(value: Any, key: str) -> int:
    """``1048576``, ``"512KiB"``, ``"10MiB"`` → bytes."""
    if isinstance(value, bool):
        raise ConfigError(f"config: {key}: expected a size such as 10MiB, got {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE_RE.match(value)):
        size = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    else:
        raise ConfigError(f"config: {key}: expected a size such as 10MiB, got {value!r}")
    if size <= 0:
        raise ConfigError(f"config: {key}: must be positive, got {value!r}")
    return size


class _Reader:
    """Typed access to the raw mapping, with ``${ENV}`` interpolation and key-naming errors."""

    def __init__(self, environ: Mapping[str, str], base_dir: Path) -> None:
        self.environ = environ
        self.base_dir = base_dir

    def mapping(self, value: Any, key: str, allowed: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"config: {key or '<top level>'}: expected a mapping, got {_kind(value)}")
        for k in value:
            if not isinstance(k, str) or k not in allowed:
                where = f"{key}.{k}" if key else str(k)
                raise ConfigError(f"config: {where}: unknown key (allowed: {', '.join(sorted(allowed))})")
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise ConfigError(f"config: {key}: expected a string, got {_kind(value)}")
        return self.interpolate(value, key)

    def interpolate(self, value: str, key: str) -> str:
        def sub(m: re.Match[str]) -> str:
            name, fallback = m.group(1), m.group(2)
            if name in self.environ:
                return self.environ[name]
            if fallback is not None:
                return fallback
            raise ConfigError(f"config: {key}: environment variable {name} is not set")

        return _ENV_RE.sub(sub, value)

    def scalar(self, value: Any, key: str) -> Any:
        """A scalar after interpolation; numeric/bool strings from ``${ENV}`` become YAML scalars."""
        if isinstance(value, str) and "${" in value:
            return yaml.safe_load(self.interpolate(value, key))
        return value

    def boolean(self, value: Any, key: str) -> bool:
        v = self.scalar(value, key)
        if not isinstance(v, bool):
            raise ConfigError(f"config: {key}: expected true or false, got {value!r}")
        return v

    def number(self, value: Any, key: str, *, integer: bool = False, minimum: float = 0.0) -> float:
        v = self.scalar(value, key)
        ok = isinstance(v, int) if integer else isinstance(v, int | float)
        if isinstance(v, bool) or not ok or v < minimum:
            what = "an integer" if integer else "a number"
            raise ConfigError(f"config: {key}: expected {what} ≥ {minimum:g}, got {value!r}")
        return float(v)

    def secret(self, value: Any, key: str) -> Secret:
        if isinstance(value, dict):
            spec = self.mapping(value, key, {"file", "env"})
            if len(spec) != 1:
                raise ConfigError(f"config: {key}: give exactly one of file or env")
            if "file" in spec:
                path = self.base_dir / self.string(spec["file"], f"{key}.file")
                try:
                    text = path.read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise ConfigError(f"config: {key}.file: cannot read {path}: {exc.strerror}") from exc
            else:
                name = self.string(spec["env"], f"{key}.env")
                if name not in self.environ:
                    raise ConfigError(f"config: {key}.env: environment variable {name} is not set")
                text = self.environ[name].strip()
        else:
            text = self.string(value, key).strip()
        if not text:
            raise ConfigError(f"config: {key}: is empty")
        return Secret(text)


def _server(r: _Reader, raw: Any) -> ServerSettings:
    m = r.mapping(raw, "server", {"listen", "body_limit", "allow_unauthenticated"})
    d = ServerSettings()
    host, port = d.host, d.port
    if "listen" in m:
        listen = r.string(m["listen"], "server.listen")
        host, _, port_s = listen.rpartition(":")
        host = host.strip("[]")
        if not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise ConfigError(f"config: server.listen: expected HOST:PORT, got {listen!r}")
        port = int(port_s)
    body_limit = parse_size(r.scalar(m["body_limit"], "server.body_limit"), "server.body_limit") \
        if "body_limit" in m else d.body_limit
    allow = r.boolean(m["allow_unauthenticated"], "server.allow_unauthenticated") \
        if "allow_unauthenticated" in m else False
    return ServerSettings(host=host, port=port, body_limit=body_limit, allow_unauthenticated=allow)


_PD_KEYS = {
    "events_url", "allowed_hosts", "routing_keys", "dry_run", "api_timeout", "connect_timeout",
    "retry_attempts", "max_age", "retry", "resend_interval", "concurrency", "backoff_on_429", "settle_delay",
    "skip_superseded_triggers",
    "rate_limit", "circuit_breaker", "api_token",
}


def _pagerduty(r: _Reader, raw: Any) -> PagerDutySettings:
    m = r.mapping(raw, "pagerduty", _PD_KEYS)
    d = PagerDutySettings()
    if m.get("api_token") is not None:
        raise ConfigError("config: pagerduty.api_token: not supported by this version of pdrelay")
    url = r.string(m["events_url"], "pagerduty.events_url") if "events_url" in m else d.events_url
    hosts = d.allowed_hosts
    if "allowed_hosts" in m:
        raw_hosts = m["allowed_hosts"]
        if not isinstance(raw_hosts, list) or not raw_hosts:
            raise ConfigError("config: pagerduty.allowed_hosts: expected a non-empty list of host names")
        hosts = tuple(r.string(h, f"pagerduty.allowed_hosts[{i}]").lower() for i, h in enumerate(raw_hosts))
    _check_events_url(url, hosts)
    keys: dict[str, Secret] = {}
    raw_keys = m.get("routing_keys")
    if raw_keys is not None:
        if not isinstance(raw_keys, dict):
            raise ConfigError("config: pagerduty.routing_keys: expected a mapping of name: key")
        for name, value in raw_keys.items():
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise ConfigError(f"config: pagerduty.routing_keys.{name}: names use letters, digits, _ . -")
            keys[name] = r.secret(value, f"pagerduty.routing_keys.{name}")
    retry = r.mapping(m.get("retry"), "pagerduty.retry", {"initial_backoff", "max_backoff"})

    def dur(mp: dict[str, Any], k: str, key: str, default: float) -> float:
        return parse_duration(r.scalar(mp[k], key), key) if k in mp else default

    initial = dur(retry, "initial_backoff", "pagerduty.retry.initial_backoff", d.initial_backoff)
    maximum = dur(retry, "max_backoff", "pagerduty.retry.max_backoff", d.max_backoff)
    if initial <= 0 or maximum < initial:
        raise ConfigError("config: pagerduty.retry: need 0 < initial_backoff ≤ max_backoff")
    api_timeout = dur(m, "api_timeout", "pagerduty.api_timeout", d.api_timeout)
    connect_timeout = dur(m, "connect_timeout", "pagerduty.connect_timeout", d.connect_timeout)
    if api_timeout <= 0 or connect_timeout <= 0:
        raise ConfigError("config: pagerduty.api_timeout: timeouts must be positive")
    return PagerDutySettings(
        events_url=url,
        allowed_hosts=hosts,
        routing_keys=keys,
        dry_run=r.boolean(m["dry_run"], "pagerduty.dry_run") if "dry_run" in m else False,
        api_timeout=api_timeout,
        connect_timeout=connect_timeout,
        retry_attempts=int(r.number(m["retry_attempts"], "pagerduty.retry_attempts", integer=True, minimum=1))
        if "retry_attempts" in m else d.retry_attempts,
        max_age=dur(m, "max_age", "pagerduty.max_age", d.max_age),
        initial_backoff=initial,
        max_backoff=maximum,
        resend_interval=dur(m, "resend_interval", "pagerduty.resend_interval", d.resend_interval),
        concurrency=int(r.number(m["concurrency"], "pagerduty.concurrency", integer=True, minimum=1))
        if "concurrency" in m else d.concurrency,
        rate_limit=_rate_limit(r, m.get("rate_limit")),
        backoff_on_429=dur(m, "backoff_on_429", "pagerduty.backoff_on_429", d.backoff_on_429),
        settle_delay=dur(m, "settle_delay", "pagerduty.settle_delay", d.settle_delay),
        skip_superseded_triggers=r.boolean(m["skip_superseded_triggers"], "pagerduty.skip_superseded_triggers")
        if "skip_superseded_triggers" in m else False,
        **_circuit_breaker(r, m.get("circuit_breaker")),
    )


def _rate_limit(r: _Reader, raw: Any) -> RateLimit:
    key = "pagerduty.rate_limit"
    m = r.mapping(raw, key, {"per_key", "window_seconds", "overrides", "global"})

    def pair(mp: dict[str, Any], where: str, default: tuple[int, float]) -> tuple[int, float]:
        n = int(r.number(mp["per_key"], f"{where}.per_key", integer=True, minimum=1)) if "per_key" in mp \
            else default[0]
        w = parse_duration(r.scalar(mp["window_seconds"], f"{where}.window_seconds"), f"{where}.window_seconds") \
            if "window_seconds" in mp else default[1]
        if w <= 0:
            raise ConfigError(f"config: {where}.window_seconds: must be positive")
        return n, w

    per_key, window = pair(m, key, (120, 60.0))
    overrides = {}
    for name, spec in r.mapping(m.get("overrides"), f"{key}.overrides", set(m.get("overrides") or {})).items():
        where = f"{key}.overrides.{name}"
        overrides[name] = pair(r.mapping(spec, where, {"per_key", "window_seconds"}), where, (per_key, window))
    glob = None
    if m.get("global") is not None:
        where = f"{key}.global"
        gm = r.mapping(m["global"], where, {"per_key", "window_seconds"})
        if "per_key" not in gm:
            raise ConfigError(f"config: {where}.per_key: required (events per window across all keys)")
        glob = pair(gm, where, (per_key, window))
    return RateLimit(per_key=per_key, window_seconds=window, overrides=overrides, global_limit=glob)


def _circuit_breaker(r: _Reader, raw: Any) -> dict[str, Any]:
    key = "pagerduty.circuit_breaker"
    m = r.mapping(raw, key, {"failure_threshold", "recovery_timeout"})
    out: dict[str, Any] = {}
    if "failure_threshold" in m:
        out["failure_threshold"] = int(
            r.number(m["failure_threshold"], f"{key}.failure_threshold", integer=True, minimum=1))
    if "recovery_timeout" in m:
        out["recovery_timeout"] = parse_duration(
            r.scalar(m["recovery_timeout"], f"{key}.recovery_timeout"), f"{key}.recovery_timeout")
        if out["recovery_timeout"] <= 0:
            raise ConfigError(f"config: {key}.recovery_timeout: must be positive")
    return out


def _check_events_url(url: str, hosts: tuple[str, ...]) -> None:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise ConfigError(f"config: pagerduty.events_url: expected an https:// URL, got {url!r}")
    if host not in hosts:
        raise ConfigError(
            f"config: pagerduty.events_url: host {host!r} is not in pagerduty.allowed_hosts "
            f"({', '.join(hosts)})"
        )
    if parts.scheme == "http" and not _is_loopback(host):
        raise ConfigError(
            f"config: pagerduty.events_url: plain http is only allowed for loopback hosts, got {url!r}"
        )


def _outbox(r: _Reader, raw: Any) -> OutboxSettings:
    m = r.mapping(raw, "outbox", {"backend", "path", "redis_url"})
    backend = r.string(m["backend"], "outbox.backend") if "backend" in m else "sqlite"
    if backend != "sqlite":
        raise ConfigError(f"config: outbox.backend: only 'sqlite' is supported by this version, got {backend!r}")
    path = r.base_dir / r.string(m["path"], "outbox.path") if "path" in m else OutboxSettings().path
    return OutboxSettings(backend=backend, path=path)


def _rules(r: _Reader, raw: Any) -> RulesSettings:
    m = r.mapping(raw, "rules", {"paths", "watch"})
    paths = RulesSettings().paths
    if "paths" in m:
        raw_paths = m["paths"]
        if isinstance(raw_paths, str):
            raw_paths = [raw_paths]
        if not isinstance(raw_paths, list) or not raw_paths:
            raise ConfigError("config: rules.paths: expected a non-empty list of files or folders")
        paths = tuple(r.base_dir / r.string(p, f"rules.paths[{i}]") for i, p in enumerate(raw_paths))
    watch = r.boolean(m["watch"], "rules.watch") if "watch" in m else False
    return RulesSettings(paths=paths, watch=watch)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )
