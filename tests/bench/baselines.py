"""Loopback servers the intake benchmark compares pdrelay with (run by ``bench_intake.py``).

    python tests/bench/baselines.py parse  --port N              # baseline A
    python tests/bench/baselines.py sqlite --port N --db FILE    # baseline B
    python tests/bench/baselines.py pd     --port N [--status S] # PagerDuty stand-in for pdrelay

- **A (parse)**: ``POST /v1/alertmanager`` reads and parses the JSON body, answers 200.
- **B (sqlite)**: the same, then stores the body in SQLite (WAL, ``synchronous=FULL``) with group
  commit: one writer thread takes every request waiting at that moment, commits them in one
  transaction, then answers each of them. This is the least a durable intake has to do.
- **pd**: ``POST /v2/enqueue`` answers ``--status`` (202 with PagerDuty's body by default).

Every mode answers ``GET /readyz`` with 200 and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

LOOPBACK = "127.0.0.1"
MAX_BATCH = 1024


def parse_notification(raw: bytes) -> dict[str, object]:
    """Parse an Alertmanager body; raise ``web.HTTPBadRequest`` unless it is an object with ``alerts``."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise web.HTTPBadRequest(text="body is not JSON") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("alerts"), list):
        raise web.HTTPBadRequest(text="not an Alertmanager notification")
    return doc


async def ready(_: web.Request) -> web.Response:
    return web.Response(text="ok")


# --------------------------------------------------------------------------- A: parse only


async def parse_only(request: web.Request) -> web.Response:
    parse_notification(await request.read())
    return web.Response(text="ok")


# --------------------------------------------------------------------------- B: SQLite group commit


class GroupCommitter:
    """A single SQLite writer that commits every request queued at that moment in one transaction."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS notifications (id INTEGER PRIMARY KEY, received REAL, body BLOB)"
        )
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._queue: asyncio.Queue[tuple[bytes, asyncio.Future[None]]] = asyncio.Queue()
        self.batches = 0
        self.rows = 0

    async def store(self, body: bytes) -> None:
        """Queue ``body`` and return once the transaction holding it has committed."""
        done = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((body, done))
        await done

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await loop.run_in_executor(self._writer, self._commit, [body for body, _ in batch])
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            self.batches += 1
            self.rows += len(batch)
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    def _commit(self, bodies: Sequence[bytes]) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(
                "INSERT INTO notifications (received, body) VALUES (julianday('now'), ?)",
                [(body,) for body in bodies],
            )
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._conn.close()


COMMITTER = web.AppKey("committer", GroupCommitter)


async def parse_and_commit(request: web.Request) -> web.Response:
    raw = await request.read()
    parse_notification(raw)
    await request.app[COMMITTER].store(raw)
    return web.Response(text="ok")


def sqlite_app(path: str) -> web.Application:
    async def committer(app: web.Application) -> AsyncIterator[None]:
        group = GroupCommitter(path)
        app[COMMITTER] = group
        task = asyncio.create_task(group.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        group.close()
        print(f"sqlite baseline: {group.rows} bodies in {group.batches} transactions", flush=True)

    app = web.Application(client_max_size=10 * 1024 * 1024)
    app.cleanup_ctx.append(committer)
    app.router.add_post("/v1/alertmanager", parse_and_commit)
    return app


# --------------------------------------------------------------------------- PagerDuty stand-in


def pd_app(status: int, delay: float) -> web.Application:
    async def enqueue(request: web.Request) -> web.Response:
        event = json.loads(await request.read())
        if delay:
            await asyncio.sleep(delay)  # a real PagerDuty is a WAN round trip away
        if 200 <= status < 300:
            key = event.get("dedup_key") or uuid.uuid4().hex
            body = {"status": "success", "message": "Event processed", "dedup_key": key}
        else:
            body = {"status": "error", "message": "Service unavailable"}
        return web.json_response(body, status=status)

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/v2/enqueue", enqueue)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("mode", choices=["parse", "sqlite", "pd"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", help="SQLite file (mode sqlite)")
    parser.add_argument("--status", type=int, default=202, help="answer of mode pd")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds mode pd waits before answering")
    args = parser.parse_args(argv)
    if args.mode == "parse":
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_post("/v1/alertmanager", parse_only)
    elif args.mode == "sqlite":
        if not args.db:
            parser.error("mode sqlite needs --db")
        app = sqlite_app(args.db)
    else:
        app = pd_app(args.status, args.delay)
    app.router.add_get("/readyz", ready)
    web.run_app(app, host=LOOPBACK, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
