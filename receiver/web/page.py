"""The /status page for browsers: the status dict rendered as one self-contained HTML page.

Jinja2 with autoescape on renders ``status.html``; the page's CSS and JavaScript are the
package's own files, inlined, and the Content-Security-Policy allows exactly those two by their
SHA-256 (no ``'unsafe-inline'``), connections to the page's own origin (the playground's POST) and
nothing else: no external asset, font or frame, so the page works offline and an injected tag
could run nothing. Each value of the dict is shown as text, whatever it contains.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any, Final

import jinja2
from aiohttp import web
from markupsafe import Markup

from receiver.web.view import status_view

__all__ = ["CONTENT_SECURITY_POLICY", "examples", "page_response", "render_page"]


def _read(name: str) -> str:
    return (resources.files("receiver.web") / name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


_CSS: Final = _read("status.css")
_SCRIPT: Final = _read("status.js")
CONTENT_SECURITY_POLICY: Final = "; ".join([
    "default-src 'none'",
    f"script-src {_sha256(_SCRIPT)}",
    f"style-src {_sha256(_CSS)}",
    "connect-src 'self'",
    "img-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])
_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}

_ENV: Final = jinja2.Environment(
    loader=jinja2.DictLoader({"status.html": _read("status.html")}),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


@functools.cache
def examples() -> tuple[tuple[str, str], ...]:
    """The captured webhook bodies shipped in ``receiver/defaults/examples``: (name, compact JSON), by name."""
    folder = resources.files("receiver") / "defaults" / "examples"
    found = sorted((entry.name.removesuffix(".json"), entry) for entry in folder.iterdir()
                   if entry.name.endswith(".json"))
    return tuple((name, json.dumps(json.loads(entry.read_text(encoding="utf-8")), separators=(",", ":")))
                 for name, entry in found)


def render_page(status: Mapping[str, Any]) -> str:
    """The HTML page of ``status`` (the /status JSON dict)."""
    template = _ENV.get_template("status.html")
    return template.render(v=status_view(status), examples=examples(), css=Markup(_CSS), script=Markup(_SCRIPT))


def page_response(status: Mapping[str, Any]) -> web.Response:
    """The page as an aiohttp response, with its Content-Security-Policy and no caching."""
    return web.Response(text=render_page(status), content_type="text/html", charset="utf-8", headers=_HEADERS)
