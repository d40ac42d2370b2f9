"""receiver/logs.py: one redacting JSON handler for every logger of the process.

Each case runs in a fresh interpreter (logging's configuration is process-wide), as `pdrelay serve`
sets it up, and reads what reaches stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SECRET = "Admin-Token-For-Operators-9c8b7a6d"
QUOTED = 'Pass"word\\With\tEscapes-77'  # JSON spells it differently: Pass\"word\\With\tEscapes-77

PROGRAM = textwrap.dedent(f"""
    import asyncio, logging, warnings
    from receiver.logs import configure_logging

    SECRET, QUOTED = {SECRET!r}, {QUOTED!r}
    log = configure_logging("INFO", [SECRET, QUOTED, ""])
    log.info("pdrelay line", extra={{"token": SECRET, "password": QUOTED}})
    try:
        raise ValueError("bad header " + SECRET)
    except ValueError:
        logging.getLogger("aiohttp.server").exception("Error handling request %s", SECRET)
    logging.getLogger("aiohttp.access").warning("access %s", QUOTED)

    async def main() -> None:
        asyncio.get_running_loop().call_exception_handler(
            {{"message": "unretrieved " + SECRET, "exception": RuntimeError(QUOTED)}})

    asyncio.run(main())
    warnings.warn("a warning naming " + SECRET, stacklevel=1)
    logging.getLogger("some.library").warning("third party %s", SECRET)
    logging.getLogger("pdrelay").debug("below the level")
""")


def test_every_logger_writes_redacted_json_lines_to_stderr() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    records = [json.loads(line) for line in lines]  # every line is JSON
    assert [(r["logger"], r["level"]) for r in records] == [
        ("pdrelay", "info"), ("aiohttp.server", "error"), ("aiohttp.access", "warning"), ("asyncio", "error"),
        ("py.warnings", "warning"), ("some.library", "warning"),
    ]
    assert records[0]["token"] == records[0]["password"] == "********"
    assert records[1]["msg"] == "Error handling request ********"
    assert records[1]["exc"].endswith("ValueError: bad header ********")
    assert "RuntimeError: ********" in records[3]["exc"]
    assert "a warning naming ********" in records[4]["msg"]
    for spelling in (SECRET, QUOTED, json.dumps(QUOTED)[1:-1]):
        assert spelling not in done.stderr
