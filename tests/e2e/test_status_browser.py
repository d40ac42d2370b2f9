"""The /status page in a real headless Chromium (Debian's, through its chromedriver and selenium).

pdrelay runs in-process on a loopback port with auth on; the browser sends the admin token on
every request (``Network.setExtraHTTPHeaders``: the page's own ``fetch`` inherits it). Two
events are queued behind a PagerDuty that answers 429 once and then never, a rules reload
fails, the fake clock is moved on: the page must show the queue in the per-key table and the
failed reload in its warning box. Then the playground runs on a captured example and on a
pasted body whose labels are a ``<script>`` tag, which must show as text and run nothing. A
screenshot of each state lands in the test's tmp_path.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from prometheus_client import CollectorRegistry
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from receiver.app import Deps, create_app
from receiver.pagerduty.events import SendResult, classify
from receiver.secret import Secret
from receiver.settings import AuthSettings, OutboxSettings, PagerDutySettings, RulesSettings, Settings
from tests.fakes import FakeClock, FakeSender

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CAPTURED = Path(__file__).parent / "captured"
ADMIN = "admin-token-00112233445566778899"
SCRIPT = "<script>alert(1)</script>"
RULES = f"""
version: 1
defaults: {{routing_key: default, dedup: alert, severity: error}}
rules:
  - name: ignore-watchdog
    match: ['alertname="Watchdog"']
    drop: true
  - name: '{SCRIPT}'
    match: ['team="storage"']
    set: {{severity: critical, summary: 'disk full on {{{{ labels.instance }}}}'}}
  - name: zone
    match: ['alertname="{SCRIPT}"']
    set: {{component: '{{{{ 1 // (labels.zone | int) }}}}'}}
"""
WAIT = 5.0  # seconds: the longest any page condition may take


@dataclass
class Seen:
    """What the browser found, handed back to the test's event loop to assert on."""

    key_row: list[str] = field(default_factory=list)
    rule_names: list[str] = field(default_factory=list)
    reload_error: list[object] = field(default_factory=list)  # shown?, then its lines
    summary: str = ""
    events: list[list[str]] = field(default_factory=list)
    trace_titles: list[str] = field(default_factory=list)
    trace_rows: list[list[str]] = field(default_factory=list)
    hostile_summary: str = ""
    hostile_title: str = ""
    hostile_errors: list[list[str]] = field(default_factory=list)
    hostile_marked: list[str] = field(default_factory=list)  # the trace rows marked as template errors
    scripts: int = -1  # script elements on the page: its own, and nothing the data added
    alert_fired: bool = True
    console: list[str] = field(default_factory=list)


def _cells(row: Any) -> list[str]:
    return [cell.text for cell in row.find_elements(By.CSS_SELECTOR, "td")]


def _run_playground(driver: WebDriver, wait: WebDriverWait[WebDriver]) -> None:
    old = driver.find_element(By.ID, "result").find_elements(By.CSS_SELECTOR, "*")
    driver.find_element(By.ID, "run").click()
    if old:
        wait.until(expected_conditions.staleness_of(old[0]))
    wait.until(expected_conditions.presence_of_element_located((By.ID, "summary")))


def _browse(url: str, out: Path) -> Seen:
    """Everything the browser does, in a thread (selenium blocks; the server runs on the test's loop)."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,2200", f"--user-data-dir={out / 'chromium-profile'}",
                "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    seen = Seen()
    try:
        wait: WebDriverWait[WebDriver] = WebDriverWait(driver, WAIT)
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Bearer {ADMIN}"}})
        driver.get(url + "/status")
        table = wait.until(expected_conditions.presence_of_element_located((By.ID, "routing-keys")))
        seen.key_row = _cells(table.find_element(By.CSS_SELECTOR, "tbody tr"))
        seen.rule_names = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#rule-names li")]
        box = driver.find_element(By.ID, "reload-error")
        seen.reload_error = [box.is_displayed(), *(li.text for li in box.find_elements(By.TAG_NAME, "li"))]
        driver.save_screenshot(str(out / "status.png"))

        Select(driver.find_element(By.ID, "example")).select_by_value("am-0.25-firing")
        wait.until(lambda d: d.find_element(By.ID, "body").get_property("value").startswith("{\n"))
        _run_playground(driver, wait)
        seen.summary = driver.find_element(By.ID, "summary").text
        seen.events = [_cells(row)[:6] for row in driver.find_elements(By.CSS_SELECTOR, "#events tbody tr")]
        seen.trace_titles = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "#trace h4")]
        seen.trace_rows = [_cells(row) for row in driver.find_elements(By.CSS_SELECTOR, "#trace table")[0]
                           .find_elements(By.CSS_SELECTOR, "tbody tr")]
        driver.save_screenshot(str(out / "playground.png"))

        body = json.loads((CAPTURED / "am-0.25_firing.json").read_text())
        body["alerts"] = body["alerts"][:1]
        body["alerts"][0]["labels"]["instance"] = SCRIPT
        body["alerts"][0]["labels"]["alertname"] = SCRIPT
        textarea = driver.find_element(By.ID, "body")
        driver.execute_script("arguments[0].value = arguments[1];", textarea, json.dumps(body))
        _run_playground(driver, wait)
        seen.hostile_summary = _cells(driver.find_element(By.CSS_SELECTOR, "#events tbody tr"))[3]
        seen.hostile_title = driver.find_element(By.CSS_SELECTOR, "#trace h4").text
        seen.hostile_errors = [_cells(r) for r in driver.find_elements(By.CSS_SELECTOR, "#template-errors tbody tr")]
        seen.hostile_marked = [_cells(r)[1] for r in driver.find_elements(By.CSS_SELECTOR, "#trace tr.template-error")]
        seen.scripts = len(driver.find_elements(By.TAG_NAME, "script"))
        try:
            driver.switch_to.alert  # noqa: B018  # raises when no dialog is open
        except NoAlertPresentException:
            seen.alert_fired = False
        driver.save_screenshot(str(out / "playground-hostile.png"))
        seen.console = [entry["message"] for entry in driver.get_log("browser")
                        if "favicon.ico" not in entry["message"]]
    finally:
        driver.quit()
    return seen


async def test_status_page_in_headless_chromium(tmp_path: Path, aiohttp_server: Any) -> None:
    """The per-key table shows the queue, the playground shows events and trace, and a <script> stays text."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not binary.exists():
            pytest.fail(f"{binary} is missing (Debian packages chromium and chromium-driver)")
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    settings = Settings(
        pagerduty=PagerDutySettings(routing_keys={"default": Secret("k" * 32)}),
        outbox=OutboxSettings(path=tmp_path / "outbox.db"),
        rules=RulesSettings(paths=(rules,)),
        auth=AuthSettings(admin_tokens=(Secret(ADMIN),)),
    )
    clock = FakeClock()
    released = asyncio.Event()

    async def answer(body: Any) -> SendResult:
        if len(sender.calls) == 1:
            return classify(429, b'{"status":"throttled"}')
        await released.wait()  # later tries hang in flight: the page's numbers stay put while the browser looks
        return classify(503, b"")

    sender = FakeSender(answer)
    app = create_app(settings, Deps(registry=CollectorRegistry(), sender=sender, clock=clock))
    server = await aiohttp_server(app)
    url = f"http://127.0.0.1:{server.port}"
    client_headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
    async with ClientSession() as session:
        resp = await session.post(url + "/v1/alertmanager", headers=client_headers,
                                  data=(CAPTURED / "am-0.25_firing.json").read_bytes())
        assert resp.status == 200
        rules.write_text(RULES + "  - name: [broken\n")  # a reload that fails: the rules in use stay
        resp = await session.post(url + "/-/reload", headers=client_headers)
        assert resp.status == 400
    async with asyncio.timeout(WAIT):
        while not sender.calls:  # the dispatcher tried once and got 429: the key waits, both events stay
            await asyncio.sleep(0.01)
    clock.advance(252.0)

    try:
        seen = await asyncio.to_thread(_browse, url, tmp_path)
    finally:
        released.set()  # the hung send ends, so the server stops at once
    shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)

    assert seen.key_row[:3] == ["default", "2", "4 m 12 s"]
    assert seen.key_row[5] == "1"  # the one 429
    assert seen.rule_names == ["ignore-watchdog", SCRIPT, "zone"]
    assert seen.reload_error == [
        True, f"{rules}:15: YAML syntax error: expected ',' or ']', but got '<stream end>'"]
    assert seen.summary == "2 events, 0 invalid, 0 dropped, 0 template errors."
    assert seen.events == [
        ["default", "trigger", "d55413deeb88df6c", "disk full on db-1.example.com:9100", "critical", SCRIPT],
        ["default", "trigger", "0ee71a229f2262e7", "disk full on db-2.example.com:9100", "critical", SCRIPT],
    ]
    assert seen.trace_titles == ["NodeFilesystemAlmostFull (d55413deeb88df6c)",
                                 "NodeFilesystemAlmostFull (0ee71a229f2262e7)"]
    assert [row[:3] for row in seen.trace_rows] == [["1", "defaults", "matched"],
                                                  ["2", "ignore-watchdog", "skipped by match"],
                                                  ["3", SCRIPT, "matched"],
                                                  ["4", "zone", "skipped by match"]]
    assert seen.trace_rows[2][3].splitlines() == [
        'severity: "error" → "critical"', 'summary: null → "disk full on db-1.example.com:9100"']
    assert seen.hostile_summary == f"disk full on {SCRIPT}"
    assert seen.hostile_title == f"{SCRIPT} (d55413deeb88df6c)"
    assert seen.hostile_errors == [["d55413deeb88df6c", "zone", "component",
                                    "UndefinedError: 'dict object' has no attribute 'zone'"]]
    assert seen.hostile_marked == ["zone"]
    assert seen.scripts == 1
    assert seen.alert_fired is False
    assert seen.console == []  # no CSP violation, no script error
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["playground-hostile.png", "playground.png",
                                                             "status.png"]
