"""The REST API client's exception tree, and reading PagerDuty's error body into it.

::

    PdrelayError
    └── PagerDutyAPIError            .status, .code, .message, .errors (PagerDuty's error body)
        ├── PagerDutyRequestError    400 and other 4xx: the request is wrong, never retried (status None:
        │                            a listing past classic pagination's 10000 results)
        ├── PagerDutyAuthError       401, 403: bad token, missing scope, or the wrong region
        ├── PagerDutyNotFound        404
        ├── PagerDutyRateLimited     429, still there when the retry budget ran out
        ├── PagerDutyServerError     5xx, still there when the retry budget ran out
        ├── PagerDutyTransportError  no answer: refused, reset, DNS, timeout, 408 (status None but for 408)
        └── PagerDutyCircuitOpen     the circuit breaker refused the call; nothing was sent

PagerDuty's REST errors are ``{"error": {"message", "code", "errors": [...]}}``; anything else
(an HTML page from a proxy, an empty 429) is read defensively. Every string that came from the
server is stripped of control characters and capped before it reaches a message, a log or /status.
"""

from __future__ import annotations

import json
import re
from typing import Any

from receiver.errors import PdrelayError

__all__ = [
    "PagerDutyAPIError",
    "PagerDutyAuthError",
    "PagerDutyCircuitOpen",
    "PagerDutyNotFound",
    "PagerDutyRateLimited",
    "PagerDutyRequestError",
    "PagerDutyServerError",
    "PagerDutyTransportError",
    "error_for",
    "parse_error_body",
]

_TEXT_LIMIT = 300
_ERRORS_LIMIT = 20
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def clean(value: object, limit: int = _TEXT_LIMIT) -> str:
    """``value`` as one line of at most ``limit`` characters: control characters become one space."""
    text = _CONTROL.sub(" ", str(value)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


class PagerDutyAPIError(PdrelayError):
    """A REST API call failed; ``status`` is the HTTP status (``None`` when nothing answered)."""

    def __init__(
        self,
        operation: str,
        status: int | None,
        message: str,
        *,
        code: int | None = None,
        errors: tuple[str, ...] = (),
        attempts: int = 1,
    ) -> None:
        self.operation = operation
        self.status = status
        self.message = message
        self.code = code
        self.errors = errors
        self.attempts = attempts
        where = f"{operation}: HTTP {status}" if status is not None else operation
        text = where + (f" (code {code})" if code is not None else "") + (f": {message}" if message else "")
        if errors:
            text += " [" + "; ".join(errors) + "]"
        if attempts > 1:
            text += f" after {attempts} attempts"
        super().__init__(text)


class PagerDutyRequestError(PagerDutyAPIError):
    """400 or another 4xx: the request itself is wrong."""


class PagerDutyAuthError(PagerDutyAPIError):
    """401 or 403: the token is wrong, lacks the scope, or belongs to the other region."""


class PagerDutyNotFound(PagerDutyAPIError):
    """404: no such object (or not visible to this token)."""


class PagerDutyRateLimited(PagerDutyAPIError):
    """429, still answered when the retries ran out."""


class PagerDutyServerError(PagerDutyAPIError):
    """5xx, still answered when the retries ran out."""


class PagerDutyTransportError(PagerDutyAPIError):
    """No usable answer: connection refused or reset, DNS, timeout, or 408."""


class PagerDutyCircuitOpen(PagerDutyAPIError):
    """The circuit breaker refused the call; nothing was sent."""


def parse_error_body(content: bytes) -> tuple[str, int | None, tuple[str, ...]]:
    """``(message, code, errors)`` from PagerDuty's error body, or the cleaned text of any other body."""
    text = content.decode("utf-8", errors="replace")
    try:
        data: Any = json.loads(text)
    except ValueError:
        return clean(text), None, ()
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return clean(text), None, ()
    message = clean(error.get("message", ""))
    raw_code = error.get("code")
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    raw_errors = error.get("errors")
    errors = tuple(clean(e) for e in raw_errors[:_ERRORS_LIMIT]) if isinstance(raw_errors, list) else ()
    return message, code, errors


def error_for(operation: str, status: int, content: bytes, attempts: int = 1) -> PagerDutyAPIError:
    """The exception for an HTTP answer that is not a success."""
    message, code, errors = parse_error_body(content)
    cls: type[PagerDutyAPIError]
    if status in (401, 403):
        cls = PagerDutyAuthError
    elif status == 404:
        cls = PagerDutyNotFound
    elif status == 408:
        cls = PagerDutyTransportError
    elif status == 429:
        cls = PagerDutyRateLimited
    elif status >= 500:
        cls = PagerDutyServerError
    elif 400 <= status < 500:
        cls = PagerDutyRequestError
    else:  # 1xx/3xx: redirects are not followed, PagerDuty sends none
        cls = PagerDutyAPIError
    return cls(operation, status, message, code=code, errors=errors, attempts=attempts)
