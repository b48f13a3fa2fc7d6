"""The admin dashboard in a real browser (Debian's Chromium driven by Playwright) against a real hub.

Simulated EAs speak the real protocol over real sockets; the page speaks the AppSync Events protocol and
the REST API. Screenshots of the main views go to a temporary folder, or to docs/screenshots/ when
TRADEWIRE_SCREENSHOTS is set.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import shutil
import time
from pathlib import Path

import msgspec
import pytest

from tradewire.app import Server
from tradewire.realtime import protocol as rp
from tradewire.sim.fleet import run_fleet

from conftest import fast_alert_settings
from helpers import EA, account_state, issue_key, issue_token, position, position_event

try:
    from playwright.async_api import async_playwright, expect
except ImportError:  # checked by the `browser` fixture: skip locally, fail in CI
    async_playwright = None

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
INSTALL_HINT = (
    "apt-get install -y chromium && .venv/bin/pip install playwright (no `playwright install`: Debian's build)"
)
VIEWPORT = {"width": 1600, "height": 900}
SIM_ACCOUNTS = 6
HOSTILE = '<img src=x onerror="window.__pwned=1"><b>bold</b>'


def chromium_path() -> str | None:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    return path if os.path.exists(path) else None


@pytest.fixture
async def browser():
    missing = [name for name, ok in (("playwright", async_playwright), ("chromium", chromium_path())) if not ok]
    if missing:
        message = f"dashboard tests need {' and '.join(missing)}: {INSTALL_HINT}"
        if os.environ.get("TRADEWIRE_REQUIRE_SERVICES"):
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory) -> Path:
    if os.environ.get("TRADEWIRE_SCREENSHOTS"):
        folder = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return tmp_path_factory.mktemp("screenshots")


def fast_settings(tmp_path, port: int = 0):
    """Alerts within a second, heartbeats of 1 s; stale prices only after 30 s (the page is watched longer)."""
    s = fast_alert_settings(tmp_path, port=port)
    s.alerts.stale_after_s = 30.0
    return s


@pytest.fixture
async def hub(tmp_path):
    srv = Server(fast_settings(tmp_path))
    await srv.start()
    yield srv
    await srv.stop()


class Page:
    """A dashboard tab: the Playwright page plus the JavaScript errors it raised (a test fails on any)."""

    def __init__(self, page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        # The page runs under a Content-Security-Policy (web_headers.py): anything it blocks is a failure too.
        page.on("console", lambda msg: self._console(msg))

    def _console(self, msg) -> None:
        if msg.type == "error" and "Content Security Policy" in msg.text:
            self.errors.append(msg.text)

    def row(self, account: str):
        return self.page.locator(f'[data-testid="fleet-row"][data-account="{account}"]')

    def cell(self, account: str, column: str):
        return self.row(account).locator(f'[data-col="{column}"]')

    def alert(self, account: str, type_: str):
        return self.page.locator(f'[data-testid="alert-row"][data-account="{account}"][data-type="{type_}"]').first

    async def go(self, route: str) -> None:
        await self.page.evaluate("route => { location.hash = route }", route)

    async def shot(self, folder: Path, name: str) -> None:
        await self.page.wait_for_timeout(300)  # let flashes settle into a typical frame
        await self.page.screenshot(path=str(folder / f"{name}.png"))

    async def until(self, expression: str, timeout: float = 5.0) -> None:
        """Wait until a JavaScript expression is true in the page. Not `wait_for_function`: Playwright
        evaluates its string inside the page, which the page's Content-Security-Policy refuses (no eval)."""
        deadline = time.monotonic() + timeout
        while not await self.page.evaluate(expression):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expression}")
            await asyncio.sleep(0.02)

    def assert_no_errors(self) -> None:
        assert not self.errors, f"JavaScript errors on the page: {self.errors}"


async def open_page(browser, server: Server, key: str | None) -> Page:
    context = await browser.new_context(viewport=VIEWPORT)
    page = Page(await context.new_page())
    await page.page.goto(f"{server.url}/" + (f"#key={key}" if key else ""))
    return page


async def live_ea(http, server: Server, account: str, **state) -> EA:
    ea = await EA.connect(http, server, await issue_token(server, account))
    await ea.greet()
    await ea.send(account_state(**state) if state else account_state())
    return ea


@contextlib.asynccontextmanager
async def fleet(server: Server, count: int):
    """A simulated fleet (the `tradewire simulate` engine) in the background."""
    tokens = [(f"sim-{i:03d}", await issue_token(server, f"sim-{i:03d}")) for i in range(1, count + 1)]
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_fleet(server.url, tokens, rate=2, duration=None, seed=7, stop=stop, system_magics=[7001])
    )
    try:
        yield [account for account, _ in tokens]
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


# --- tests ------------------------------------------------------------------------------------------
async def test_shows_every_account_and_live_values_within_a_second(hub, http, browser, shots):
    key = await issue_key(hub, "read")
    async with fleet(hub, SIM_ACCOUNTS) as sim_ids:
        ea = await live_ea(http, hub, "acc-watch", equity=10_000.0, margin=200.0)
        hostile = position(2, symbol="EURUSD", comment=HOSTILE)  # what an EA sends is shown as text, never markup
        await ea.send({"type": "positions", "ts": 1, "positions": [position(1, symbol="EURUSD", magic=7001), hostile]})
        await ea.send({"type": "ticks", "ticks": [{"symbol": "EURUSD", "bid": 1.08512, "ask": 1.08526, "ts": 1}]})
        await ea.send(position_event(1, "OPEN", pid=1, position=position(1, symbol="EURUSD", magic=7001)))
        await ea.wait_ack(1)
        page = await open_page(browser, hub, key)
        p = page.page

        rows = p.locator('[data-testid="fleet-row"]')
        await expect(rows).to_have_count(SIM_ACCOUNTS + 1, timeout=10_000)
        for account in [*sim_ids, "acc-watch"]:
            await expect(page.cell(account, "status")).to_have_text("live")
        assert "key=" not in p.url  # the key left the address bar (and history) for sessionStorage
        assert await p.evaluate("sessionStorage.getItem('tradewire.apiKey')") == key
        await expect(p.get_by_test_id("conn-state")).to_have_text("LIVE")

        # A value the EA sends is on screen within a second.
        await expect(page.cell("acc-watch", "equity")).to_have_text("10,000.00")
        started = time.monotonic()
        await ea.send(account_state(equity=12_345.67, margin=250.0))
        await expect(page.cell("acc-watch", "equity")).to_have_text("12,345.67", timeout=1000)
        await expect(page.cell("acc-watch", "marginLevel")).to_have_text("4,938.27%", timeout=1000)
        assert time.monotonic() - started < 1.0

        # Sorting by equity puts the richest account first.
        await p.locator('th[data-sort="equity"]').click()
        equities = await p.locator('[data-testid="fleet-row"] [data-col="equity"]').all_inner_texts()
        values = [float(v.replace(",", "")) for v in equities if v != "—"]
        assert values == sorted(values, reverse=True)
        # Filtering narrows the table.
        await p.get_by_test_id("fleet-filter").fill("acc-watch")
        await expect(rows).to_have_count(1)
        await p.get_by_test_id("fleet-filter").fill("")
        await page.shot(shots, "fleet")

        await page.go("#/positions")
        await p.get_by_test_id("positions-account-filter").fill("acc-watch")
        watched = p.locator('[data-testid="position-row"][data-account="acc-watch"]')
        await expect(watched).to_have_count(2)
        system = p.locator('[data-testid="position-row"][data-account="acc-watch"][data-position="1"]')
        await expect(system.get_by_test_id("system-badge")).to_be_visible()  # magic 7001 was flagged `system`
        hostile_row = p.locator('[data-testid="position-row"][data-account="acc-watch"][data-position="2"]')
        await expect(hostile_row.locator('[data-col="comment"]')).to_have_text(HOSTILE)
        assert await p.evaluate("window.__pwned") is None
        await p.get_by_test_id("positions-account-filter").fill("")
        await page.shot(shots, "positions")

        await page.go("#/prices")
        await expect(p.locator('[data-testid="price-row"][data-symbol="EURUSD"]')).to_be_visible()
        await ea.send({"type": "ticks", "ticks": [{"symbol": "EURUSD", "bid": 1.08612, "ask": 1.08620, "ts": 2}]})
        eurusd = p.locator('[data-testid="price-row"][data-symbol="EURUSD"]')
        await expect(eurusd.locator('[data-col="bid"]')).to_have_text("1.08612", timeout=1000)
        await expect(eurusd).to_have_attribute("data-dir", "up")
        await page.shot(shots, "prices")

        await page.go("#/exposure")
        await expect(p.locator('[data-testid="exposure-row"][data-symbol="EURUSD"]')).to_be_visible(timeout=3000)
        await page.shot(shots, "exposure")

        await page.go("#/account/acc-watch")
        detail = p.get_by_test_id("account-detail")
        await expect(detail).to_have_attribute("data-account", "acc-watch")
        await expect(p.get_by_test_id("kpi-equity")).to_have_text("12,345.67")
        await expect(p.locator('[data-testid="equity-chart"] canvas')).to_have_count(1)
        await expect(p.locator('[data-testid="event-row"][data-event="OPEN"][data-position="1"]')).to_have_count(1)
        await ea.send(position_event(2, "CLOSE", pid=1, position=position(1, symbol="EURUSD", magic=7001), profit=4.2))
        await expect(p.locator('[data-testid="event-row"][data-event="CLOSE"]')).to_have_count(1, timeout=2000)
        await page.shot(shots, "account")
        page.assert_no_errors()
        await ea.close()


async def test_margin_call_is_shown_and_acknowledged_by_admin_not_read_key(hub, http, browser, shots):
    read = await open_page(browser, hub, await issue_key(hub, "read"))
    admin = await open_page(browser, hub, await issue_key(hub, "admin"))
    ea = await live_ea(http, hub, "acc-1")
    for page in (read, admin):
        await expect(page.cell("acc-1", "status")).to_have_text("live")
        await expect(page.page.get_by_test_id("alert-count")).to_have_attribute("data-count", "0")

    await ea.send(account_state(equity=900.0, margin=1000.0))  # margin level 90 %: at or below 100 %
    for page in (read, admin):
        alert = page.alert("acc-1", "MARGIN_CALL")
        await expect(alert).to_be_visible(timeout=3000)
        await expect(alert).to_have_attribute("data-state", "open")
        await expect(alert.get_by_test_id("alert-message")).to_contain_text("90.00%")
        await expect(page.page.get_by_test_id("alert-count")).to_have_attribute("data-count", "1")
        await expect(page.cell("acc-1", "marginLevel").locator(".lvl-call")).to_be_visible()

    # A read key is refused, and the page shows the hub's reason.
    await read.alert("acc-1", "MARGIN_CALL").get_by_test_id("ack-button").click()
    refused = read.alert("acc-1", "MARGIN_CALL").get_by_test_id("ack-error")
    await expect(refused).to_contain_text("needs an admin API key")
    await expect(refused).to_contain_text("403")
    await read.shot(shots, "alert-refused")
    assert await read.alert("acc-1", "MARGIN_CALL").get_attribute("data-acked") == "no"

    # An admin key acknowledges it; every page learns it from the alerts channel.
    await admin.alert("acc-1", "MARGIN_CALL").get_by_test_id("ack-button").click()
    for page in (admin, read):
        await expect(page.alert("acc-1", "MARGIN_CALL")).to_have_attribute("data-acked", "yes", timeout=3000)
        await expect(page.page.get_by_test_id("alert-count")).to_have_attribute("data-count", "0")
    await expect(read.alert("acc-1", "MARGIN_CALL").get_by_test_id("alert-acked")).to_contain_text("key:")

    # A stop-out is CRITICAL: the header shows it at once.
    await ea.send(account_state(equity=400.0, margin=1000.0))
    await expect(admin.alert("acc-1", "STOP_OUT")).to_have_attribute("data-severity", "CRITICAL", timeout=3000)
    await expect(admin.page.get_by_test_id("alert-count")).to_have_class(has_class("critical"))
    await expect(admin.page.get_by_test_id("header")).to_have_class(has_class("cue"))
    await admin.go("#/alerts")
    await admin.shot(shots, "alerts")
    await ea.send(account_state(equity=10_000.0, margin=200.0))
    await expect(admin.alert("acc-1", "STOP_OUT")).to_have_attribute("data-state", "resolved", timeout=3000)
    read.assert_no_errors()
    admin.assert_no_errors()
    await ea.close()


def has_class(name: str) -> re.Pattern:
    return re.compile(rf"(^|\s){name}(\s|$)")


async def test_an_account_disconnect_flips_its_status(hub, http, browser):
    page = await open_page(browser, hub, await issue_key(hub, "read"))
    ea = await live_ea(http, hub, "acc-1")
    await expect(page.row("acc-1")).to_have_attribute("data-status", "live", timeout=5000)
    await ea.close()
    await expect(page.row("acc-1")).to_have_attribute("data-status", "lost", timeout=2000)
    await expect(page.alert("acc-1", "CONNECTION_LOST")).to_be_visible(timeout=5000)
    ea = await live_ea(http, hub, "acc-1")
    await expect(page.row("acc-1")).to_have_attribute("data-status", "live", timeout=2000)
    page.assert_no_errors()
    await ea.close()


async def test_a_rest_answer_made_before_a_disconnect_does_not_bring_back_live(hub, http, browser):
    """The race behind a flaky run in CI: the page's accounts reload is answered while the EA is live,
    the EA disconnects, the channel says 'lost', and only then does the REST answer arrive. The channel's
    'lost' changes neither lastSeen nor updatedAt, so by those the stale 'live' looked as new and won,
    until the next reload 30 s later. Summaries now carry the time their status was judged (asOf)."""
    ea_live, fetched, released = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def hold_the_first_reload(route) -> None:
        if fetched.is_set():
            await route.continue_()
            return
        await ea_live.wait()
        response = await route.fetch()  # made by the server now, while the EA is live
        fetched.set()
        await released.wait()
        await route.fulfill(response=response)

    context = await browser.new_context(viewport=VIEWPORT)
    await context.route(re.compile(r"/api/v1/accounts(\?|$)"), hold_the_first_reload)
    page = Page(await context.new_page())
    await page.page.goto(f"{hub.url}/#key={await issue_key(hub, 'read')}")
    ea = await live_ea(http, hub, "acc-1")
    await expect(page.row("acc-1")).to_have_attribute("data-status", "live", timeout=5000)
    ea_live.set()
    await asyncio.wait_for(fetched.wait(), 10)
    await ea.close()
    await expect(page.row("acc-1")).to_have_attribute("data-status", "lost", timeout=5000)
    seen = await page.page.evaluate("window.tradewire.store.stats.messages")
    released.set()
    # applyAccount counts every summary it is given, kept or not: wait until the stale one was judged.
    await page.until(f"window.tradewire.store.stats.messages > {seen}")
    assert await page.page.evaluate("window.tradewire.store.accounts.get('acc-1').data.status") == "lost"
    await expect(page.row("acc-1")).to_have_attribute("data-status", "lost")
    page.assert_no_errors()


async def test_a_server_restart_shows_the_banner_and_the_page_recovers(tmp_path, http, browser, shots):
    first = Server(fast_settings(tmp_path))
    await first.start()
    port = first.port
    key = await issue_key(first, "read")
    page = await open_page(browser, first, key)
    ea = await live_ea(http, first, "acc-1", equity=10_000.0)
    gone = await live_ea(http, first, "acc-gone")
    await expect(page.row("acc-1")).to_have_attribute("data-status", "live", timeout=5000)
    await expect(page.row("acc-gone")).to_have_attribute("data-status", "live", timeout=5000)
    banner = page.page.get_by_test_id("conn-banner")

    await ea.close()
    await gone.close()
    await first.stop()
    await expect(banner).to_have_attribute("data-state", "reconnecting", timeout=5000)
    await expect(page.page.get_by_test_id("conn-state")).to_have_text("RECONNECTING")
    await expect(page.row("acc-1")).to_have_attribute("data-status", "stale")  # nothing stale shown as live
    await page.shot(shots, "reconnecting")

    settings = msgspec.structs.replace(first.settings, server=msgspec.structs.replace(first.settings.server, port=port))
    second = Server(settings)
    await second.start()
    try:
        ea = await live_ea(http, second, "acc-1", equity=11_111.11)
        await expect(page.page.get_by_test_id("conn-state")).to_have_text("LIVE", timeout=15_000)
        await expect(page.row("acc-1")).to_have_attribute("data-status", "live", timeout=5000)
        await expect(page.cell("acc-1", "equity")).to_have_text("11,111.11")
        await expect(banner).to_have_attribute("data-state", "reconnected")
        await expect(banner).to_have_count(0, timeout=8000)  # and then it goes away
        await ea.send(account_state(equity=12_000.0))
        await expect(page.cell("acc-1", "equity")).to_have_text("12,000.00", timeout=1000)
        # The restarted hub knows an account that has not come back only as lost, without figures: the row
        # says lost (never live) and keeps the last figures the page had.
        await expect(page.row("acc-gone")).to_have_attribute("data-status", "lost")
        await expect(page.cell("acc-gone", "equity")).to_have_text("10,000.00")
        page.assert_no_errors()
        await ea.close()
    finally:
        await second.stop()


async def test_a_wrong_key_gets_a_clear_message_and_another_can_be_entered(hub, browser, shots):
    page = await open_page(browser, hub, "twk_nope_not-a-key")
    error = page.page.get_by_test_id("auth-error")
    await expect(error).to_contain_text("The hub refused this API key", timeout=5000)
    await expect(error).to_contain_text("invalid API key")
    assert await page.page.evaluate("sessionStorage.getItem('tradewire.apiKey')") is None
    await page.shot(shots, "wrong-key")

    await page.page.get_by_test_id("key-input").fill(await issue_key(hub, "read"))
    await page.page.get_by_test_id("key-submit").click()
    await expect(page.page.get_by_test_id("conn-state")).to_have_text("LIVE", timeout=5000)
    await expect(page.page.get_by_test_id("fleet")).to_be_visible()
    page.assert_no_errors()


async def test_without_a_key_the_page_asks_for_one(hub, browser):
    page = await open_page(browser, hub, None)
    await expect(page.page.get_by_test_id("key-input")).to_be_visible(timeout=5000)
    await expect(page.page.get_by_test_id("auth-error")).to_have_count(0)
    page.assert_no_errors()


async def test_pure_helpers_in_the_browser(hub, browser):
    """The page's own helpers, run where they run: margin risk as the alert rules see it, back-off, auth header."""
    page = await open_page(browser, hub, None)
    await expect(page.page.get_by_test_id("key-input")).to_be_visible(timeout=5000)
    got = await page.page.evaluate(
        """async () => {
        const { marginRisk } = await import('/web/format.js');
        const { authSubprotocol, backoffMs } = await import('/web/client.js');
        const levels = { marginCallLevel: 100, stopOutLevel: 50 };
        const pct = (level) => marginRisk({ marginLevel: level, margin: 1, ...levels }, 'MT5');
        const inMoney = { marginMode: 'money', margin: 10, marginCallLevel: 500, stopOutLevel: 200 };
        const money = (equity, free, platform) => marginRisk({ ...inMoney, equity, freeMargin: free }, platform);
        return {
          percent: [pct(null).risk, pct(400).risk, pct(140).risk, pct(100).risk, pct(50).risk],
          defaults: marginRisk({ marginLevel: 90, margin: 1 }, 'MT5').risk,
          money: [money(1000, 100, 'MT5').risk, money(1000, 100, 'MT4').risk, money(150, 900, 'MT5').risk],
          backoff: [1, 2, 3, 10].map((n) => backoffMs(n, 500, 10000, () => 0.5)),
          auth: authSubprotocol('twk_a_b', '127.0.0.1'),
        };
    }"""
    )
    assert got["percent"] == ["none", "ok", "near", "call", "stopout"]
    assert got["defaults"] == "call"  # no levels from the terminal: 100 % / 50 %, as the hub's defaults
    assert got["money"] == ["ok", "stopout", "stopout"]  # MT4 compares free margin, MT5 equity
    assert got["backoff"] == [500, 1000, 2000, 10000]
    assert rp.auth_from_subprotocols([got["auth"]]) == {"host": "127.0.0.1", "x-api-key": "twk_a_b"}  # the hub reads it
    page.assert_no_errors()


async def test_account_event_history_pages_and_filters(hub, http, browser):
    ea = await live_ea(http, hub, "acc-1")
    await ea.send([position_event(seq, "OPEN", pid=seq) for seq in range(1, 56)])  # 55 events: two pages
    await ea.wait_ack(55)
    page = await open_page(browser, hub, await issue_key(hub, "read"))
    p = page.page
    await page.row("acc-1").click()
    await expect(p.get_by_test_id("account-detail")).to_have_attribute("data-account", "acc-1")
    rows = p.get_by_test_id("event-row")
    await expect(rows).to_have_count(50)
    await expect(rows.first).to_have_attribute("data-position", "55")  # newest first
    await p.get_by_test_id("events-older").click()
    await expect(rows).to_have_count(5)
    await expect(rows.last).to_have_attribute("data-position", "1")
    await expect(p.get_by_test_id("events-older")).to_be_disabled()
    await p.get_by_test_id("events-newer").click()
    await expect(rows).to_have_count(50)
    await p.get_by_test_id("events-type-filter").select_option("CLOSE")
    await expect(rows).to_have_count(0)
    await ea.send(position_event(56, "CLOSE", pid=55))  # live, and it matches the filter
    await expect(rows).to_have_count(1, timeout=2000)
    page.assert_no_errors()
    await ea.close()


async def test_a_malformed_link_does_not_blank_the_page(hub, http, browser):
    """`decodeURIComponent` threw on a bad %-escape: on every render for `#/account/%E0`, at start-up for
    `#key=%ZZ` (the page stayed blank, and the fragment was kept, so reloading did not help)."""
    key = await issue_key(hub, "read")
    page = await open_page(browser, hub, key)
    await expect(page.page.get_by_test_id("fleet")).to_be_visible(timeout=5000)
    await page.go("#/account/%E0")
    await expect(page.page.get_by_test_id("fleet")).to_be_visible(timeout=5000)  # the fleet, not a blank page
    page.assert_no_errors()

    fresh = await browser.new_context(viewport=VIEWPORT)
    other = Page(await fresh.new_page())
    await other.page.goto(f"{hub.url}/#key=%ZZ")
    await expect(other.page.get_by_test_id("key-input")).to_be_visible(timeout=5000)  # asked for a key
    other.assert_no_errors()


async def test_the_page_and_the_api_carry_browser_security_headers(hub, http):
    async with http.get(hub.url + "/") as r:
        csp = r.headers["Content-Security-Policy"]
        page = await r.read()
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp and "'unsafe-inline'" not in csp
    inline = page.split(b'<script type="importmap">')[1].split(b"</script>")[0]
    digest = base64.b64encode(hashlib.sha256(inline).digest()).decode()
    assert f"'sha256-{digest}'" in csp  # the import map, by hash: nothing else inline runs
    async with http.get(hub.url + "/web/index.html") as r:  # the same page by the static route
        assert r.headers["Content-Security-Policy"] == csp
    for path in ("/", "/web/app.js", "/api/v1/healthz"):
        async with http.get(hub.url + path) as r:
            assert r.headers["X-Content-Type-Options"] == "nosniff", path
            assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Referrer-Policy"] == "no-referrer", path


async def test_one_eas_error_flood_does_not_hide_another_accounts_margin_call(hub, http, browser):
    """Each EA error is an alert; newest first, 600 of one EA's pushed every other account's margin call
    out of the page's 500 (and a live flood grew the tab's memory without end). An account's newest 20
    errors are kept, and the open episodes are loaded apart from the newest alerts."""
    margin = await live_ea(http, hub, "acc-1", equity=900.0, margin=1000.0)  # 90 %: MARGIN_CALL
    await asyncio.sleep(1.5)  # raised before the flood: older than every error
    noisy = await live_ea(http, hub, "acc-2")

    def errors(first: int, count: int) -> list[dict]:
        return [
            {"type": "error", "seq": n, "id": f"err-{n}", "code": "4756", "message": "trade failed"}
            for n in range(first, first + count)
        ]

    for first in range(1, 601, 100):
        await noisy.send(errors(first, 100))
        await noisy.wait_ack(first + 99)
    page = await open_page(browser, hub, await issue_key(hub, "read"))
    await page.go("#/alerts")
    await expect(page.alert("acc-1", "MARGIN_CALL")).to_be_visible(timeout=5000)
    for first in range(601, 801, 100):  # and live, with the page open
        await noisy.send(errors(first, 100))
        await noisy.wait_ack(first + 99)
    await expect(page.page.locator('[data-testid="alert-row"][data-account="acc-2"]').first).to_be_visible()
    await page.page.wait_for_timeout(500)
    kept = await page.page.evaluate(
        "[...window.tradewire.store.alerts.values()].filter((a) => a.account === 'acc-2').length"
    )
    assert 0 < kept <= 20
    await expect(page.alert("acc-1", "MARGIN_CALL")).to_be_visible()
    page.assert_no_errors()
    await margin.close()
    await noisy.close()
