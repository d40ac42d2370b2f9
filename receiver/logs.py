"""Operational logs: one JSON object per line on stderr, with the ``extra`` fields merged in.

:func:`configure_logging` installs one handler, on the root logger, and lets ``pdrelay``,
``aiohttp.*``, ``asyncio`` and Python's warnings reach it, so that every line the process logs
goes through :class:`JsonFormatter`. As a last line of defence the formatter replaces every
configured secret by ``********`` in the rendered line, whatever code put it there, in the
spelling JSON gives it as well as its own.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable

__all__ = ["JsonFormatter", "configure_logging"]

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# The loggers whose records reach the root handler rather than a handler of their own.
ROUTED = ("pdrelay", "aiohttp", "asyncio", "py.warnings")
REDACTED = "********"


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        spellings = set()
        for secret in secrets:
            if secret:
                spellings |= {secret, json.dumps(secret, ensure_ascii=False)[1:-1]}
        self._secrets = sorted(spellings, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        line = json.dumps(out, default=str, ensure_ascii=False)
        for secret in self._secrets:
            line = line.replace(secret, REDACTED)
        return line


def configure_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> logging.Logger:
    """Send every logger's records to stderr as redacted JSON lines; return the ``pdrelay`` logger.

    One handler on the root logger at ``level``; ``pdrelay``, ``aiohttp.*``, ``asyncio`` and
    ``py.warnings`` (warnings are captured) lose any handler of their own and propagate to it.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ROUTED:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    logging.captureWarnings(True)
    return logging.getLogger("pdrelay")
