"""``pdrelay send``: one event by hand, posted to a running pdrelay's ``POST /v1/events``.

pdrelay checks the event (the same checks as for any native event) and stores it in its outbox before it
answers; this command prints the dedup_key of the accepted event. Exit status (:data:`EXIT_CODES`):
0 accepted, 1 refused by pdrelay (bad event, or not allowed), 2 bad command line or token file,
3 pdrelay not reached or not able to store it now (try again later).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["EXIT_CODES", "send"]

ACCEPTED, REFUSED, USAGE, UNAVAILABLE = 0, 1, 2, 3
EXIT_CODES = {
    ACCEPTED: "accepted: the dedup_key is printed",
    REFUSED: "refused by pdrelay (the event is invalid, or the token may not send events)",
    USAGE: "bad command line or token file",
    UNAVAILABLE: "pdrelay not reached, or it cannot store the event now: try again later",
}
_SHOWN = 500  # characters of pdrelay's answer repeated on stderr


def _event(args: argparse.Namespace) -> dict[str, Any]:
    event: dict[str, Any] = {"routing_key": args.routing_key, "event_action": args.action}
    if args.dedup_key is not None:
        event["dedup_key"] = args.dedup_key
    fields = {"summary": args.summary, "source": args.source}
    if args.action != "change":
        fields["severity"] = args.severity
    payload = {k: v for k, v in fields.items() if v is not None}
    if args.action != "resolve" or payload:
        event["payload"] = payload
    return event


def _token(args: argparse.Namespace) -> str | None:
    """The bearer token from ``--token-file`` (None without one); :class:`ValueError` saying what is wrong."""
    if args.token_file is None:
        return None
    path = str(args.token_file)
    try:
        token: str = args.token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read the token file {path!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"the token file {path!r} is not UTF-8 text") from None
    if not token or "\n" in token:
        raise ValueError(f"the token file {path!r} must hold one token on one line")
    return token


def _fail(status: int, message: str) -> int:
    print(f"pdrelay send: {message}", file=sys.stderr)
    return status


def send(args: argparse.Namespace) -> int:
    import httpx

    try:
        token = _token(args)
    except ValueError as exc:
        return _fail(USAGE, str(exc))
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    url = args.url.rstrip("/") + "/v1/events"
    try:
        response = httpx.post(url, json=_event(args), headers=headers, timeout=args.timeout)
    except httpx.HTTPError as exc:
        return _fail(UNAVAILABLE, f"pdrelay not reached at {url}: {type(exc).__name__}: {str(exc)[:_SHOWN]}")
    try:
        answer = response.json()
    except ValueError:
        answer = None
    error = answer.get("error") if isinstance(answer, dict) else None
    said = str(error if error is not None else response.text)[:_SHOWN]
    if response.status_code == 202 and isinstance(answer, dict) and isinstance(answer.get("dedup_key"), str):
        print(answer["dedup_key"])
        return ACCEPTED
    if response.status_code >= 500 or response.status_code == 408:
        return _fail(UNAVAILABLE, f"pdrelay answered {response.status_code}: {said}")
    return _fail(REFUSED, f"pdrelay refused the event ({response.status_code}): {said}")
