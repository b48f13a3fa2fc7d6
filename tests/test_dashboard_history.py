"""The dashboard's history after gaps, in a real browser against a real hub (as test_dashboard.py): an account
page's live events in a busy fleet and across a reconnect too long to replay, the alerts reload (retried, and
replacing what the page held), the event filters on live rows, and volumes in steps of 0.001 lot.

A gap is made by routing the page's realtime socket through the test (Playwright's WebSocketRoute): the test
closes it with 4008, as the hub closes a subscriber that fell behind, and refuses reconnects until it is over.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from test_dashboard import VIEWPORT, Page, browser, fast_settings, hub, live_ea, open_page
from tradewire.app import Server

from helpers import account_state, issue_key, position, position_event

try:
    from playwright.async_api import expect
except ImportError:  # the `browser` fixture skips (or fails in CI) without Playwright
    expect = None

__all__ = ["browser", "hub"]  # fixtures, used by name

HISTORY_LIMIT = 20  # the hub replays at most this many durable publications after a reconnect
EVENTS_CHANNEL = "/trading/events/*"


@pytest.fixture
async def short_history_hub(tmp_path):
    """A hub that replays little after a reconnect: a short gap is already one too long to replay."""
    settings = fast_settings(tmp_path)
    settings.realtime.history_limit = HISTORY_LIMIT
    srv = Server(settings)
    await srv.start()
    yield srv
    await srv.stop()


class Gap:
    """The page's realtime sockets, routed through the test to the hub. `cut()` closes them with 4008 and
    refuses every reconnect until `mend()`."""

    def __init__(self) -> None:
        self.open = True
        self.sockets: list[tuple] = []  # (page side, hub side)

    async def route(self, ws) -> None:
        if not self.open:
            await ws.close(code=4000, reason="the test keeps the hub out of reach")
            return
        self.sockets.append((ws, ws.connect_to_server()))

    async def cut(self) -> None:
        self.open = False
        for page_side, hub_side in self.sockets:
            await page_side.close(code=4008, reason="publications were missed; resubscribe with since")
            await hub_side.close()
        self.sockets.clear()

    def mend(self) -> None:
        self.open = True


async def open_gapped_page(browser, server: Server, key: str, gap: Gap) -> Page:
    context = await browser.new_context(viewport=VIEWPORT)
    await context.route_web_socket(re.compile(r"/event/realtime"), gap.route)
    page = Page(await context.new_page())
    await page.page.goto(f"{server.url}/#key={key}")
    return page


async def newest_offset(http, server: Server, key: str, path: str, **params) -> int:
    async with http.get(f"{server.url}/api/v1/{path}", params={**params, "limit": 1}, headers={"x-api-key": key}) as r:
        assert r.status == 200, await r.text()
        return (await r.json())["items"][0]["offset"]


async def taken_up_to(page: Page, channel: str, offset: int) -> None:
    """Wait until the page's subscription to `channel` has received the publication at `offset`."""
    subs = "[...window.tradewire.client.subs.values()]"
    await page.until(f"{subs}.some((s) => s.channel === '{channel}' && s.lastOffset >= {offset})", timeout=15)


async def open_account(page: Page, account: str) -> None:
    await expect(page.row(account)).to_have_attribute("data-status", "live", timeout=5000)
    await page.go(f"#/account/{account}")
    await expect(page.page.get_by_test_id("account-detail")).to_have_attribute("data-account", account)
    await expect(page.page.get_by_test_id("events-page")).to_have_text("page 1")  # its first REST page is in


async def until_open(http, server: Server, key: str, account: str, type_: str, is_open: bool) -> None:
    """Wait until the hub has (or no longer has) an open alert of this type for this account."""
    params = {"account": account, "type": type_, "state": "open"}
    for _ in range(100):
        async with http.get(f"{server.url}/api/v1/alerts", params=params, headers={"x-api-key": key}) as r:
            if bool((await r.json())["items"]) == is_open:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{type_} of {account} is still {'not ' if is_open else ''}open")


def event_row(page: Page, pid: int):
    return page.page.locator(f'[data-testid="event-row"][data-position="{pid}"]')


# --- the account page's live events ---------------------------------------------------------------
async def test_an_accounts_live_event_stays_on_its_page_in_a_busy_fleet(hub, http, browser):
    """The store kept the newest 500 live events of the whole fleet, and the account page showed its own
    from them: 501 of another account's pushed acc-1's one event off its page (newer than the page's REST
    answer, it was on no page at all)."""
    key = await issue_key(hub, "read")
    watched = await live_ea(http, hub, "acc-1")
    busy = await live_ea(http, hub, "acc-2")
    page = await open_page(browser, hub, key)
    await open_account(page, "acc-1")

    await watched.send(position_event(1, "OPEN", pid=7))
    await expect(event_row(page, 7)).to_have_count(1, timeout=3000)
    for first in range(1, 502, 100):
        await busy.send([position_event(seq, "OPEN", pid=1000 + seq) for seq in range(first, min(first + 100, 502))])
        await busy.wait_ack(min(first + 99, 501))
    await taken_up_to(page, EVENTS_CHANNEL, await newest_offset(http, hub, key, "events", account="acc-2"))
    await page.page.wait_for_timeout(200)  # a frame or two to render what was taken
    await expect(event_row(page, 7)).to_have_count(1)
    await expect(page.page.get_by_test_id("event-row")).to_have_count(1)
    page.assert_no_errors()
    await watched.close()
    await busy.close()


async def test_more_live_events_than_the_page_keeps_reload_its_first_page(hub, http, browser):
    """Past LIVE_EVENTS_KEPT (1,000) live events of the account, the oldest are let go: the first page is then
    read again from REST, so they are on the pages below it, not lost."""
    key = await issue_key(hub, "read")
    ea = await live_ea(http, hub, "acc-1")
    page = await open_page(browser, hub, key)
    await open_account(page, "acc-1")
    await expect(page.page.get_by_test_id("event-row")).to_have_count(0)
    count = 1050
    for first in range(1, count + 1, 150):
        await ea.send([position_event(seq, "OPEN", pid=seq) for seq in range(first, min(first + 150, count + 1))])
        await ea.wait_ack(min(first + 149, count))
    await taken_up_to(page, EVENTS_CHANNEL, await newest_offset(http, hub, key, "events", account="acc-1"))
    rows = page.page.get_by_test_id("event-row")
    await expect(rows.first).to_have_attribute("data-position", str(count))
    older = page.page.get_by_test_id("events-older")
    await expect(older).to_be_enabled()  # the first page came from REST again: the rest are below it
    shown = await rows.count()
    assert 50 <= shown < 1000
    for _ in range(30):  # and every event is on one page or another
        await older.click()
        await expect(page.page.get_by_test_id("events-page")).not_to_contain_text("…")
        if await older.is_disabled():
            break
    await expect(rows.last).to_have_attribute("data-position", "1")
    page.assert_no_errors()
    await ea.close()


async def test_the_account_page_reloads_events_missed_in_a_gap_too_long_to_replay(short_history_hub, http, browser):
    """After a reconnect whose resubscribe says `"recovered": false`, only alerts were reloaded over REST: the
    account page never showed the events of the gap."""
    hub = short_history_hub
    gap = Gap()
    key = await issue_key(hub, "read")
    ea = await live_ea(http, hub, "acc-1")
    page = await open_gapped_page(browser, hub, key, gap)
    await open_account(page, "acc-1")
    await ea.send(position_event(1, "OPEN", pid=1))
    await expect(event_row(page, 1)).to_have_count(1, timeout=3000)

    await gap.cut()
    await expect(page.page.get_by_test_id("conn-state")).not_to_have_text("LIVE", timeout=3000)
    missed = HISTORY_LIMIT + 5
    await ea.send([position_event(seq, "OPEN", pid=seq) for seq in range(2, missed + 2)])
    await ea.wait_ack(missed + 1)
    gap.mend()
    await expect(page.page.get_by_test_id("conn-state")).to_have_text("LIVE", timeout=15_000)
    rows = page.page.get_by_test_id("event-row")
    await expect(rows).to_have_count(missed + 1, timeout=5000)
    await expect(rows.first).to_have_attribute("data-position", str(missed + 1))  # newest first
    page.assert_no_errors()
    await ea.close()


async def test_live_event_rows_follow_the_from_filter(hub, http, browser):
    """Live rows were checked against the type and `to` filters only: an event older than `from` was shown."""
    ea = await live_ea(http, hub, "acc-1")
    page = await open_page(browser, hub, await issue_key(hub, "read"))
    await open_account(page, "acc-1")
    await page.page.get_by_test_id("events-from").fill("2023-11-15T00:00")  # UTC: 1,700,006,400,000 ms
    await expect(page.page.get_by_test_id("events-page")).to_have_text("page 1")
    await expect(page.page.get_by_test_id("event-row")).to_have_count(0)

    await ea.send(position_event(1, "OPEN", pid=1))  # ts 1,700,000,000,001: before `from`
    await ea.send(position_event(2, "OPEN", pid=2, ts=1_700_100_000_000))  # after it
    await expect(event_row(page, 2)).to_have_count(1, timeout=3000)
    await page.page.wait_for_timeout(200)
    await expect(event_row(page, 1)).to_have_count(0)
    await expect(page.page.get_by_test_id("event-row")).to_have_count(1)

    await page.page.get_by_test_id("events-from").fill("")  # the hub has both
    await expect(page.page.get_by_test_id("event-row")).to_have_count(2)
    page.assert_no_errors()
    await ea.close()


# --- alerts reloads ---------------------------------------------------------------------------------
async def test_a_failed_alerts_load_is_tried_again(hub, http, browser):
    """The alerts were loaded by one Promise.all of five requests: one 503 threw the others away, and the
    load was never tried again (an open margin call stayed off the page until a reconnect)."""
    ea = await live_ea(http, hub, "acc-1", equity=900.0, margin=1000.0)  # 90 %: MARGIN_CALL
    key = await issue_key(hub, "read")
    await until_open(http, hub, key, "acc-1", "MARGIN_CALL", True)  # raised before the page opens
    refused = []

    async def unavailable_once(route) -> None:
        if refused:
            await route.continue_()
            return
        refused.append(route.request.url)
        body = '{"error": {"code": "unavailable", "message": "store unavailable"}}'
        await route.fulfill(status=503, headers={"Retry-After": "3"}, content_type="application/json", body=body)

    context = await browser.new_context(viewport=VIEWPORT)
    await context.route(re.compile(r"/api/v1/alerts(\?|$)"), unavailable_once)
    page = Page(await context.new_page())
    await page.page.goto(f"{hub.url}/#key={key}")
    # Said for a few seconds: the hub's reason, and that it is tried again after the Retry-After.
    notice = page.page.get_by_test_id("notice")
    await expect(notice).to_have_text("Could not load alerts: store unavailable (trying again in 3 s)", timeout=5000)
    await expect(page.alert("acc-1", "MARGIN_CALL")).to_have_attribute("data-state", "open", timeout=8000)
    assert len(refused) == 1
    page.assert_no_errors()
    await ea.close()


async def test_an_alert_resolved_in_a_gap_too_long_to_replay_is_not_left_open(short_history_hub, http, browser):
    """The reload after such a gap loads the newest alerts and the open episodes, and only added them to
    what the page held: a margin call resolved during the gap, under 500 newer alerts, was in neither and
    stayed open and unacknowledged on the page (and in the header's count) for good."""
    hub = short_history_hub
    gap = Gap()
    key = await issue_key(hub, "read")
    margin = await live_ea(http, hub, "acc-1", equity=900.0, margin=1000.0)  # 90 %: MARGIN_CALL
    noisy = await live_ea(http, hub, "acc-2")
    page = await open_gapped_page(browser, hub, key, gap)
    await page.go("#/alerts")
    held = page.alert("acc-1", "MARGIN_CALL")
    await expect(held).to_have_attribute("data-state", "open", timeout=5000)
    await expect(page.page.get_by_test_id("alert-count")).to_have_attribute("data-count", "1")

    await gap.cut()
    await expect(page.page.get_by_test_id("conn-state")).not_to_have_text("LIVE", timeout=3000)
    await asyncio.sleep(0.05)  # every error below is raised at least a millisecond after the margin call
    for first in range(1, 601, 100):  # newer than it: the newest 500 alerts leave it out
        await noisy.send(
            [
                {"type": "error", "seq": n, "id": f"err-{n}", "code": "4756", "message": "trade failed"}
                for n in range(first, first + 100)
            ]
        )
        await noisy.wait_ack(first + 99)
    await margin.send(account_state(equity=10_000.0, margin=200.0))  # resolved, while the page is away
    await until_open(http, hub, key, "acc-1", "MARGIN_CALL", False)

    gap.mend()
    await expect(page.page.get_by_test_id("conn-state")).to_have_text("LIVE", timeout=15_000)
    await expect(page.page.locator('[data-testid="alert-row"][data-account="acc-2"]').first).to_be_visible(timeout=5000)
    await expect(held).to_have_count(0, timeout=5000)  # not among the newest, not open: not held any more
    held_open = await page.page.evaluate(
        "[...window.tradewire.store.alerts.values()].filter((a) => !a.resolvedAt && !a.ackedAt).map((a) => a.type)"
    )
    assert held_open and set(held_open) == {"SYSTEM_ERROR"}
    await expect(page.page.get_by_test_id("alert-count")).to_have_attribute("data-count", str(len(held_open)))
    page.assert_no_errors()
    await margin.close()
    await noisy.close()


# --- volumes ----------------------------------------------------------------------------------------
async def test_volumes_show_lot_steps_of_a_thousandth(hub, http, browser):
    """Volumes were rounded to two decimals: a 0.005-lot position showed as 0.01."""
    ea = await live_ea(http, hub, "acc-1")
    small = position(1, symbol="XAUUSD", volume=0.005, openPrice=2000.5, price=2001.0)
    await ea.send({"type": "positions", "ts": 1, "positions": [small, position(2, volume=1.0)]})
    page = await open_page(browser, hub, await issue_key(hub, "read"))
    await page.go("#/positions")
    volume = '[data-testid="position-row"][data-account="acc-1"][data-position="{}"] [data-col="volume"]'
    await expect(page.page.locator(volume.format(1))).to_have_text("0.005", timeout=5000)
    await expect(page.page.locator(volume.format(2))).to_have_text("1.00")
    await page.go("#/exposure")
    net = page.page.locator('[data-testid="exposure-row"][data-symbol="XAUUSD"] [data-col="netVolume"]')
    await expect(net).to_have_text("+0.005", timeout=5000)

    shown = await page.page.evaluate(
        """async () => {
        const { volume, signedVolume } = await import('/web/format.js');
        return [volume(0.005), volume(0.1), volume(1.25), volume(0.1 + 0.2), volume(1234.5), signedVolume(-0.015)];
    }"""
    )
    assert shown == ["0.005", "0.10", "1.25", "0.30", "1,234.50", "-0.015"]
    page.assert_no_errors()
    await ea.close()
