"""``pdrelay serve``: build the app from the config, run it on uvloop (TLS, SIGHUP reload), and once it
listens say how it is set up and where (``--port-file``: the bound port, for ``--listen HOST:0``); at
SIGTERM or SIGINT, say which one stopped it, what it drained and what stays queued."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import ipaddress
import os
import signal
import ssl
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvloop
from aiohttp import web

import receiver
from receiver.app import Deps, create_app
from receiver.auth import OPEN_PATHS, Authenticator
from receiver.cli.common import load_settings_or_report
from receiver.errors import ConfigError, OutboxUnavailable
from receiver.logs import configure_logging
from receiver.server import app_runner
from receiver.settings import Settings
from receiver.state import STATE
from receiver.tls import server_ssl_context
from transforms import RulesError

__all__ = ["redis_location", "serve", "start_summary"]


def serve(args: argparse.Namespace) -> int:
    settings = load_settings_or_report(args)
    if settings is None:
        return 2
    log = configure_logging(args.log_level, redacted(settings))
    try:
        if args.listen is not None:
            settings = with_listen(settings, args.listen)
        ssl_context = server_ssl_context(settings.server.tls) if settings.server.tls is not None else None
    except ConfigError as exc:
        print(f"pdrelay: {exc}", file=sys.stderr)
        return 2
    try:
        app = create_app(settings, Deps(log=log))
    except RulesError as exc:
        print(f"pdrelay: rules refused:\n{exc}", file=sys.stderr)
        return 2
    app.on_startup.append(_install_sighup)
    # The outbox's commit thread and read thread need the GIL back promptly when their
    # SQLite call returns; the default 5 ms switch interval made commits wait on a busy
    # event loop (intake benchmark: +15 % throughput, lower p99 at 0.5 ms).
    sys.setswitchinterval(0.0005)
    # Everything built so far (rules, settings, modules) lives as long as the process:
    # keep the collector from walking it again and again under load.
    gc.collect()
    gc.freeze()
    # Intake allocates many short-lived containers that reference counting frees; collect
    # the young generation less often (default 700) to keep its pauses out of the p99.
    gc.set_threshold(20_000, 20, 20)
    # uvloop's event loop: +40 % intake throughput in tests/bench/bench_intake.py.
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)

    def listening(addresses: list[Any]) -> None:
        port: int = addresses[0][1]  # several only for a host name with several addresses
        _announce(replace(settings, server=replace(settings.server, port=port)), app, log)
        if args.port_file is not None:
            write_port_file(args.port_file, port)

    try:
        _run(app, settings, loop, ssl_context, listening)
    except (ConfigError, OutboxUnavailable) as exc:  # e.g. the outbox cannot be read with the configured keys,
        print(f"pdrelay: {exc}", file=sys.stderr)  # or its Redis does not answer at start (named, no password)
        return 2
    return 0


def redacted(settings: Settings) -> list[str]:
    """What the logs must never show: every secret, and the spellings a request carries some in (the
    ``Authorization: Basic`` value, an encryption key in URL-safe base64)."""
    found = settings.secrets()
    found += [base64.b64encode(f"{b.username}:{b.password.reveal()}".encode()).decode() for b in settings.auth.basic]
    found += [k.reveal().strip().replace("+", "-").replace("/", "_").rstrip("=")
              for k in settings.security.encryption_keys]
    return found


def with_listen(settings: Settings, listen: str) -> Settings:
    """``settings`` with ``--listen HOST:PORT`` in place of ``server.listen``; port 0: the kernel picks one.

    The rule ``server.listen`` obeys holds here too: not on loopback only with auth or
    ``server.allow_unauthenticated``.
    """
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--listen: expected HOST:PORT (port 0: any free port), got {listen!r}")
    server = replace(settings.server, host=host, port=int(port))
    if not _is_loopback(host) and not server.allow_unauthenticated and not settings.auth.enabled:
        raise ConfigError(
            f"--listen: {listen} is not a loopback address and no auth is configured; "
            "set server.allow_unauthenticated: true to expose pdrelay without authentication"
        )
    return replace(settings, server=server)


def write_port_file(path: Path, port: int) -> None:
    """Write ``port`` and a newline to ``path`` atomically: a temporary file in the same folder, renamed."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o644)  # mkstemp's 0600 is for secrets; a port is none
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(f"{port}\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ConfigError(f"--port-file: cannot write {path}: {exc.strerror or exc}") from exc


def _run(
    app: web.Application, settings: Settings, loop: asyncio.AbstractEventLoop, ssl_context: ssl.SSLContext | None,
    listening: Callable[[list[Any]], None],
) -> None:
    """Serve until SIGTERM or SIGINT and shut down as ``web.run_app`` does; call ``listening`` with the
    bound addresses once the socket listens (``run_app`` has no such moment to hook into). Once stopped,
    log which signal stopped it and what it drained and leaves queued."""
    runner = app_runner(app, settings.server, app[STATE].log)
    stopped_by: list[signal.Signals] = []

    def stop(sig: signal.Signals) -> None:
        stopped_by.append(sig)
        raise web.GracefulExit()  # out of run_until_complete, as aiohttp's own handler does

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)

    async def serve_forever() -> None:
        await runner.setup()
        try:
            site = web.TCPSite(runner, settings.server.host, settings.server.port, ssl_context=ssl_context)
            await site.start()
            listening(runner.addresses)
            await asyncio.Event().wait()  # until a signal raises GracefulExit out of the loop
        finally:
            await runner.cleanup()

    main = loop.create_task(serve_forever())
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not main.done():  # stopped by a signal: the cleanup above runs on cancellation
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(main)
        rest = asyncio.all_tasks(loop)
        for task in rest:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        if stopped_by:  # not after a failure to start, which is reported as such
            _log_stop(app, stopped_by[0])


def _log_stop(app: web.Application, sig: signal.Signals) -> None:
    """One line at stop: the signal, the sends that were in flight (drained: they settled; cancelled:
    they did not within the drain's time and are sent again next time) and what stays queued."""
    st = app[STATE]
    drained, cancelled = st.dispatcher.drained
    queued = st.outbox.depth().queued
    st.log.info(f"pdrelay stopped on {sig.name}: {drained} in-flight send(s) drained, {cancelled} cancelled; "
                f"{queued} event(s) stay queued",
                extra={"signal": sig.name, "drained": drained, "cancelled": cancelled, "queued": queued})


def _announce(settings: Settings, app: web.Application, log: object) -> None:
    """The start-up lines; ``settings.server`` holds the bound address."""
    st = app[STATE]
    pd = settings.pagerduty
    st.log.info("pdrelay starting", extra=start_summary(settings, app))
    keyring = st.keyring
    if keyring is None:
        st.log.warning("alert content is stored unencrypted: set security.encryption_key (see `pdrelay keygen`)")
    else:
        st.log.info("stored alert content is encrypted (AES-256-GCM)",
                    extra={"key_ids": list(keyring.ids), "encrypts_with": keyring.primary_id})
    if st.dry_run:
        why = "pagerduty.dry_run is true" if pd.dry_run else "no routing key is configured"
        st.log.warning(f"DRY-RUN: {why}; events are accepted, rendered, stored and logged, but NOT sent")
    server, tls = settings.server, settings.server.tls
    if settings.auth.enabled:
        st.log.info("authentication enabled", extra={
            "auth_methods": Authenticator(settings.auth, settings.security).describe(),  # group → methods
            "open_paths": sorted(OPEN_PATHS),
            "tls": tls is not None, "client_auth": tls.client_auth if tls is not None else "none",
        })
    elif server.allow_unauthenticated and not _is_loopback(server.host):
        st.log.warning(f"no authentication configured: server.allow_unauthenticated is set; anyone who reaches "
                       f"{server.listen} may post alerts and reload rules")
    else:
        st.log.warning(f"no authentication configured: listening on loopback only ({server.listen})")


def start_summary(settings: Settings, app: web.Application) -> dict[str, Any]:
    """The start line's fields: how pdrelay is set up, by names, paths, ids and hashes only (no secret)."""
    st = app[STATE]
    pd, server, tls = settings.pagerduty, settings.server, settings.server.tls
    rules = st.rulebook.current
    keyring = st.keyring
    return {
        "version": str(receiver.__version__), "config": settings.source, "listen": server.listen,
        "tls": tls is not None, "client_auth": tls.client_auth if tls is not None else "none",
        "auth_methods": Authenticator(settings.auth, settings.security).describe() if settings.auth.enabled
        else "none",
        "routing_keys": sorted(pd.routing_keys), "events_url": pd.events_url, "dry_run": st.dry_run,
        **_outbox_summary(settings),
        "encryption": "off" if keyring is None else "aes-256-gcm",
        "key_ids": [] if keyring is None else list(keyring.ids),
        "rules_sources": [str(p) for p in rules.sources], "rules_sha256": rules.sha256,
        "rule_count": len(st.rulebook.rule_names),
        "audit": str(settings.audit_path) if settings.audit.enabled else "off",
    }


def _outbox_summary(settings: Settings) -> dict[str, Any]:
    """Where the outbox is (SQLite: its path; Redis: the server without credentials, and the key prefix) and
    where the rate budget is kept (in the process, or in that Redis for every replica)."""
    box = settings.outbox
    if box.backend != "redis":
        return {"outbox_backend": box.backend, "outbox": str(box.path), "rate_budget": "process"}
    return {"outbox_backend": "redis", "outbox": redis_location(box.redis.url, box.redis.sentinels,
                                                                 box.redis.service_name),
            "outbox_key_prefix": box.redis.key_prefix, "rate_budget": "redis"}


def redis_location(url: str | None, sentinels: tuple[tuple[str, int], ...], service_name: str | None) -> str:
    """The Redis server as the start line names it: scheme, host, port and database (or socket path) of the
    URL, never its user name, password or query; with Sentinel, the service and the sentinels."""
    if sentinels:
        return f"sentinel {service_name}@" + ",".join(f"{h}:{p}" for h, p in sentinels)
    if url is None:
        return "?"
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _install_sighup(app: web.Application) -> None:
    st = app[STATE]

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, st.rulebook.try_reload, "signal:SIGHUP")
