"""Group commit on one SQLite file: concurrent writes share one transaction and one fsync.

Every write that arrives while a transaction is being committed joins the next one, so
concurrent intake requests share one fsync instead of paying one each. A batch's
statements run on the event loop: they only touch SQLite's page cache. Only the
``COMMIT`` — the fsync — runs on a dedicated thread; the next batch waits for it.
Running the statements on that thread instead was measured 1.5× slower: the thread must
re-take the GIL after every SQLite call (every row), and a busy event loop makes it wait.
Each write runs in its own savepoint, so one failing write cannot spoil the others in its
batch. Reads use a second connection on a thread of their own and see only committed
data; WAL checkpoints run on that thread too, beside the writer, never inside a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from receiver.errors import OutboxUnavailable

__all__ = ["GroupCommitter", "Write", "is_text", "lossless"]

T = TypeVar("T")
Write = Callable[[sqlite3.Connection], Any]  # runs inside the batch's transaction, in its own savepoint
_CHECKPOINT_EVERY = 64  # commits between passive WAL checkpoints


class GroupCommitter:
    """The writer and reader connections of one SQLite file, and the batching of writes."""

    def __init__(self, path: Path, *, busy_timeout_ms: int, create: bool) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._create = create
        self._executor: ThreadPoolExecutor | None = None  # open, COMMIT, close
        self._reader: ThreadPoolExecutor | None = None  # reads and checkpoints
        self._conn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._ckconn: sqlite3.Connection | None = None
        self._checkpoint: asyncio.Task[None] | None = None
        self._commits_since_checkpoint = 0
        self._pending: list[tuple[Write, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        # Runs last in each batch's transaction, in a savepoint of its own (what is kept "with the next write").
        self.before_commit: Write = lambda conn: None
        # Told after each batch whether it committed (True) or was rolled back; runs on the event loop.
        self.after_commit: Callable[[bool], None] = lambda committed: None

    # ------------------------------------------------------------------ lifecycle

    async def open(self, prepare: Callable[[sqlite3.Connection], T]) -> T:
        """Open the file and run ``prepare`` on the writer connection (schema, keys); return its result."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdrelay-outbox")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdrelay-outbox-read")
        try:
            return await self._call(lambda: self._open_sync(prepare))
        except BaseException:
            self._executor.shutdown(wait=True)
            self._reader.shutdown(wait=True)
            self._executor = self._reader = None
            raise

    def _connect(self, target: str | Path, **kw: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = sqlite3.connect(target, isolation_level=None, check_same_thread=False, **kw)
        return conn

    def _open_sync(self, prepare: Callable[[sqlite3.Connection], T]) -> T:
        if self._create:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect(self._path)
        else:  # an operator's command: never create a file that is not there
            conn = self._connect(f"{self._path.resolve().as_uri()}?mode=rw", uri=True)
        try:
            conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run beside the writer (_maybe_checkpoint)
            conn.execute("PRAGMA cache_size=-8192")  # 8 MiB of pages: intake rarely reads from disk
            result = prepare(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._rconn = self._connect(self._path)
        self._rconn.execute("PRAGMA query_only=1")
        self._rconn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        self._ckconn = self._connect(self._path)
        return result

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self._checkpoint is not None:
            await self._checkpoint
        if self._reader is not None:
            for c in (self._rconn, self._ckconn):
                if c is not None:
                    await asyncio.get_running_loop().run_in_executor(self._reader, c.close)
            self._reader.shutdown(wait=True)
        if self._executor is not None:
            if self._conn is not None:
                await self._call(self._conn.close)
            self._executor.shutdown(wait=True)
        self._executor = self._reader = None
        self._conn = self._rconn = self._ckconn = None

    # ------------------------------------------------------------------ reads and writes

    async def _call(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise OutboxUnavailable("outbox is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the reader connection (committed data only), on the reader thread."""
        if self._reader is None or self._rconn is None:
            raise OutboxUnavailable("outbox is not open")
        rconn = self._rconn
        return await asyncio.get_running_loop().run_in_executor(self._reader, lambda: fn(rconn))

    async def write(self, op: Write) -> Any:
        """Run ``op`` in the next group commit; return its result once that commit is durable."""
        if self._executor is None:
            raise OutboxUnavailable("outbox is not open")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((op, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await fut

    async def run_alone(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the writer connection and thread, between batches, in transactions of its own."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
        conn = self._require_conn()
        return await self._call(lambda: fn(conn))

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = self._apply(batch)
                await self._call(self._commit)
            except Exception as exc:  # the commit failed: nothing in this batch is durable
                with contextlib.suppress(Exception):
                    await self._call(self._rollback)
                self.after_commit(False)
                error = OutboxUnavailable(f"outbox commit failed: {exc}")
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(error)
                continue
            self._maybe_checkpoint()
            self.after_commit(True)
            for (_, fut), (ok, value) in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)

    def _apply(self, batch: list[tuple[Write, asyncio.Future[Any]]]) -> list[tuple[bool, Any]]:
        """Run the batch's writes in one open transaction (on the event loop); the caller commits."""
        conn = self._require_conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = [self._in_savepoint(conn, op) for op, _ in batch]
            self._in_savepoint(conn, self.before_commit)  # its failure spoils nothing else
            return results
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _in_savepoint(conn: sqlite3.Connection, op: Write) -> tuple[bool, Any]:
        conn.execute("SAVEPOINT op")
        try:
            result = op(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            return False, (OutboxUnavailable(str(exc)) if isinstance(exc, sqlite3.Error) else exc)
        conn.execute("RELEASE op")
        return True, result

    def _commit(self) -> None:
        self._require_conn().execute("COMMIT")

    def _rollback(self) -> None:
        conn = self._require_conn()
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise OutboxUnavailable("outbox is not open")
        return self._conn

    @property
    def writer(self) -> sqlite3.Connection:
        """The writer connection, for statements between batches on the event loop (counts)."""
        return self._require_conn()

    def _maybe_checkpoint(self) -> None:
        """Every few commits, copy the WAL back into the database on the reader thread.

        A PASSIVE checkpoint never blocks the writer; the WAL restarts from its beginning
        once a checkpoint has copied all of it, so the file stays small.
        """
        self._commits_since_checkpoint += 1
        if self._commits_since_checkpoint < _CHECKPOINT_EVERY or self._ckconn is None or self._reader is None:
            return
        if self._checkpoint is not None and not self._checkpoint.done():
            return
        self._commits_since_checkpoint = 0
        ckconn, reader = self._ckconn, self._reader

        async def run() -> None:
            # On error the next one tries again; a WAL that grows for a while loses nothing.
            with contextlib.suppress(sqlite3.Error):
                await asyncio.get_running_loop().run_in_executor(
                    reader, lambda: ckconn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                )

        self._checkpoint = asyncio.create_task(run())


@contextlib.contextmanager
def lossless(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``conn`` reading a TEXT value that is not UTF-8 (only a hand-edited file has one) instead of raising, its
    bytes as lone surrogates (see :func:`is_text`): for the reads that set such a row aside or show it, so that
    it fails alone. Not for intake's reads: it costs ~0.4 µs a value (tests/bench/bench_outbox.py: +18% CPU
    per encrypted notification when every read had it)."""
    conn.text_factory = _lossless_text
    try:
        yield conn
    finally:
        conn.text_factory = str


def _lossless_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def is_text(value: str) -> bool:
    """Was ``value`` read from UTF-8 (no lone surrogate from :func:`lossless`)?"""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
