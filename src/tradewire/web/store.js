// The dashboard's state. Channel messages and REST answers mutate it at once (cheap: a Map write), and the
// page renders at most once per animation frame (`touch`): 10,000 updates a second still cost ~60 renders.
//
// Freshness: every record remembers the connection epoch it was last confirmed in. A new epoch starts at
// each connection_ack, so after a reconnect whatever the snapshot or REST reload has not confirmed yet is
// shown stale, and while disconnected everything is.

import { decimalsOf } from './format.js';

const FLASH_MS = 600;
const MAX_ALERTS = 2000;
// An EA's own errors (one alert each) kept per account: one EA reporting errors in a loop must not fill the
// page, and push every other account's margin calls out of sight (nor grow the tab's memory without end).
export const ERRORS_KEPT_PER_ACCOUNT = 20;
// Live position events of the account page being viewed (not the whole fleet's: a busy fleet would push the
// viewed account's out). Past this many the oldest go, and the page reloads its first page from REST.
export const LIVE_EVENTS_KEPT = 1000;
const SERIES_POINTS = 3600;
const SERIES_STEP_MS = 1000; // one live chart point a second is plenty next to one a minute from REST
const CRITICAL_CUE_MS = 4000;
const TICK_MS = 500; // ages, flash expiry and the clock move even when no message arrives

const FLASHED = [
  ['balance', (a) => a.state?.balance],
  ['equity', (a) => a.state?.equity],
  ['floatingProfit', (a) => a.floatingProfit],
  ['margin', (a) => a.state?.margin],
  ['freeMargin', (a) => a.state?.freeMargin],
  ['marginLevel', (a) => a.state?.marginLevel],
  ['positions', (a) => a.positions],
  ['status', (a) => a.status],
];

export class Store {
  constructor() {
    this.version = 0;
    this.versions = { accounts: 0, positions: 0, prices: 0, exposure: 0, alerts: 0, events: 0 };
    this.conn = { state: 'connecting', attempt: 0, retryAt: null, error: null, connects: 0 };
    this.live = false;
    this.epoch = 0;
    this.disconnectedAt = null;
    this.reconnectedAt = null;
    this.clockSkew = 0; // server clock minus ours, from /healthz: ages are computed on the server's clock
    this.accounts = new Map(); // id -> {data, epoch, flash, positionCount}
    this.positions = new Map(); // account -> {list, epoch}
    this.prices = new Map(); // symbol -> {data, epoch, dir, digits, changedAt, recvAt}
    this.exposure = { data: null, epoch: -1 };
    this.alerts = new Map(); // id -> alert (the version with the highest offset)
    this.ackErrors = new Map(); // alert id -> message of a refused acknowledgement
    this.acking = new Set();
    this.role = null; // learned by trying: 'read' after a 403 on acknowledge, 'admin' after a success
    this.liveEvents = noLiveEvents(); // the viewed account's live position events (watchEvents)
    this._alertsDuringReload = null; // ids applied while a REST reload of the alerts runs (kept by it)
    this.systemMagics = new Set();
    this.detail = { account: null, series: [] };
    this.ui = {}; // view settings (sorts, filters, sound): app.js fills it, views change it and call touch()
    this.authError = null;
    this.notice = null;
    this.criticalUntil = 0;
    this.onCritical = null;
    this.stats = { messages: 0, renders: 0, renderMs: 0, renderMsMax: 0 };
    this._listeners = [];
    this._scheduled = false;
    this._ticker = null;
    this._frame = this._frame.bind(this);
  }

  // --- rendering ------------------------------------------------------------------------------
  onRender(fn) {
    this._listeners.push(fn);
    if (!this._ticker) this._ticker = setInterval(() => this.touch(), TICK_MS);
  }

  /** Something changed: render on the next animation frame (once, however many changes come before it). */
  touch() {
    if (this._scheduled) return;
    this._scheduled = true;
    requestAnimationFrame(this._frame);
  }

  _frame(t) {
    this._scheduled = false;
    this.version += 1;
    this.stats.renders += 1;
    const started = performance.now();
    for (const fn of this._listeners) fn(t);
    const took = performance.now() - started;
    this.stats.renderMs += took;
    if (took > this.stats.renderMsMax) this.stats.renderMsMax = took;
  }

  serverNow() {
    return Date.now() + this.clockSkew;
  }

  // --- connection -----------------------------------------------------------------------------
  setConnection(status) {
    const wasLive = this.live;
    this.conn = status;
    this.live = status.state === 'live';
    if (this.live && !wasLive) {
      this.epoch += 1;
      this.reconnectedAt = status.connects > 1 ? Date.now() : null;
      this.disconnectedAt = null;
    } else if (!this.live && this.disconnectedAt === null && status.state === 'reconnecting') {
      this.disconnectedAt = Date.now();
    }
    this.touch();
  }

  isStale(rec) {
    return !this.live || !rec || rec.epoch !== this.epoch;
  }

  // --- accounts -------------------------------------------------------------------------------
  /**
   * A summary from the accounts channel, or from REST. A REST answer may have been made before the last
   * channel message arrived: it wins only when it was made at least as late (`asOf`, server clock). Not by
   * lastSeen or updatedAt: a disconnect's 'lost' changes neither, and a stale 'live' would look as new.
   */
  applyAccount(summary, fromRest = false) {
    this.stats.messages += 1;
    let rec = this.accounts.get(summary.id);
    // Older than what is shown: leave it, and leave it unconfirmed.
    if (fromRest && rec && isOlder(summary, rec.data)) return;
    // A restarted hub knows an account that has not come back only as 'lost', with no figures: the page
    // keeps showing the last ones it had, as it does for any lost account.
    if (rec && !summary.state && rec.data.state) {
      summary = { ...summary, info: summary.info ?? rec.data.info, state: rec.data.state };
    }
    if (!rec) {
      rec = { data: summary, epoch: this.epoch, flash: {}, positionCount: () => this._positionCount(summary.id) };
      this.accounts.set(summary.id, rec);
    } else {
      markFlashes(rec, summary);
      rec.data = summary;
    }
    rec.epoch = this.epoch;
    if (this.detail.account === summary.id) this._addPoint(summary);
    this.versions.accounts += 1;
    this.touch();
  }

  /** Open positions of an account: the positions channel is newer than the summary after a position event. */
  _positionCount(account) {
    const pos = this.positions.get(account);
    return pos ? pos.list.length : (this.accounts.get(account)?.data.positions ?? 0);
  }

  flashOf(rec, field, now = performance.now()) {
    const f = rec.flash[field];
    return f && now - f.at < FLASH_MS ? `fl-${f.dir}` : '';
  }

  // --- positions, prices, exposure ------------------------------------------------------------
  applyPositions(msg) {
    this.stats.messages += 1;
    this.positions.set(msg.account, { list: msg.positions || [], epoch: this.epoch });
    this.versions.positions += 1;
    this.touch();
  }

  applyPrice(tick) {
    this.stats.messages += 1;
    const rec = this.prices.get(tick.symbol);
    const digits = Math.max(rec?.digits ?? 0, decimalsOf(tick.bid), decimalsOf(tick.ask));
    let dir = rec?.dir ?? '';
    let changedAt = rec?.changedAt ?? 0;
    if (rec && tick.bid !== rec.data.bid) {
      dir = tick.bid > rec.data.bid ? 'up' : 'down';
      changedAt = performance.now();
    }
    this.prices.set(tick.symbol, { data: tick, epoch: this.epoch, dir, digits, changedAt, recvAt: Date.now() });
    this.versions.prices += 1;
    this.touch();
  }

  digitsOf(symbol, fallback) {
    return this.prices.get(symbol)?.digits || Math.max(2, decimalsOf(fallback));
  }

  applyExposure(msg) {
    this.stats.messages += 1;
    this.exposure = { data: msg, epoch: this.epoch };
    this.versions.exposure += 1;
    this.touch();
  }

  // --- alerts ---------------------------------------------------------------------------------
  /** An alert version (raised, acknowledged, resolved): the one with the highest offset wins. */
  applyAlert(alert, live = false) {
    this.stats.messages += 1;
    if (this._alertsDuringReload) this._alertsDuringReload.add(alert.id);
    const prev = this.alerts.get(alert.id);
    if (prev && (prev.offset || 0) > (alert.offset || 0)) return;
    this.alerts.set(alert.id, alert);
    if (alert.ackedAt) this.ackErrors.delete(alert.id);
    if (live && !prev && alert.severity === 'CRITICAL' && !alert.resolvedAt) {
      this.criticalUntil = Date.now() + CRITICAL_CUE_MS;
      if (this.onCritical) this.onCritical(alert);
    }
    if (alert.type === 'SYSTEM_ERROR' && !prev) this._pruneErrors(alert.account);
    if (this.alerts.size > MAX_ALERTS) this._pruneAlerts();
    this.versions.alerts += 1;
    this.touch();
  }

  /** Keep an account's newest ERRORS_KEPT_PER_ACCOUNT system errors (by offset: the hub's order). */
  _pruneErrors(account) {
    const errors = [];
    for (const a of this.alerts.values()) if (a.type === 'SYSTEM_ERROR' && a.account === account) errors.push(a);
    if (errors.length <= ERRORS_KEPT_PER_ACCOUNT) return;
    errors.sort((a, b) => (a.offset || 0) - (b.offset || 0));
    for (const a of errors.slice(0, errors.length - ERRORS_KEPT_PER_ACCOUNT)) this.alerts.delete(a.id);
    this.errorsDropped = (this.errorsDropped || 0) + errors.length - ERRORS_KEPT_PER_ACCOUNT;
  }

  /** A REST reload of the alerts starts: what arrives meanwhile (live, or an acknowledgement) is kept by it. */
  beginAlertsReload() {
    if (!this._alertsDuringReload) this._alertsDuringReload = new Set();
  }

  /**
   * The REST reload's answer replaces the alerts held: after a gap too long to replay, an alert held as open
   * that was resolved meanwhile may be in no answer (neither among the newest nor open), and kept it would
   * stay open and unacknowledged for good. What arrived since the reload began is kept (newest offset wins).
   */
  replaceAlerts(items) {
    const during = this._alertsDuringReload || new Set();
    this._alertsDuringReload = null;
    const kept = [];
    for (const id of during) if (this.alerts.has(id)) kept.push(this.alerts.get(id));
    this.alerts = new Map();
    for (const a of items) this.applyAlert(a, false);
    for (const a of kept) this.applyAlert(a, false);
    for (const id of [...this.ackErrors.keys()]) if (!this.alerts.has(id)) this.ackErrors.delete(id);
    this.versions.alerts += 1;
    this.touch();
  }

  _pruneAlerts() {
    const done = [...this.alerts.values()].filter((a) => a.resolvedAt).sort((a, b) => a.raisedAt - b.raisedAt);
    for (const a of done.slice(0, this.alerts.size - MAX_ALERTS)) this.alerts.delete(a.id);
  }

  /** Alerts still needing a person: open and not acknowledged. */
  unacked() {
    let count = 0;
    let critical = false;
    for (const a of this.alerts.values()) {
      if (!a.ackedAt && !a.resolvedAt) {
        count += 1;
        if (a.severity === 'CRITICAL') critical = true;
      }
    }
    return { count, critical };
  }

  setAckError(id, message) {
    if (message) this.ackErrors.set(id, message);
    else this.ackErrors.delete(id);
    this.versions.alerts += 1;
    this.touch();
  }

  // --- position events ------------------------------------------------------------------------
  /** A live position event: kept when it is the viewed account's (see watchEvents). */
  applyEvent(ev) {
    this.stats.messages += 1;
    if (ev.system && ev.position) this.learnSystemMagic(ev.position.magic);
    const live = this.liveEvents;
    if (ev.account !== live.account || live.account === null) return;
    if (ev.offset) {
      if (live.offsets.has(ev.offset)) return;
      live.offsets.add(ev.offset);
      if (ev.offset > live.head) live.head = ev.offset;
    }
    live.list.unshift(ev);
    if (live.list.length > LIVE_EVENTS_KEPT) {
      for (const old of live.list.splice(LIVE_EVENTS_KEPT)) {
        live.offsets.delete(old.offset);
        if (old.offset > live.lost) live.lost = old.offset;
      }
    }
    this.versions.events += 1;
    this.touch();
  }

  /**
   * The account page keeps every live event of its account from when it opens (up to LIVE_EVENTS_KEPT).
   * `head`: the highest offset received; `lost`: events up to this offset may be missing from the list (the
   * oldest let go, or a reconnect's gap too long to replay): a REST page made after it has them.
   */
  watchEvents(account) {
    if (this.liveEvents.account !== account) this.liveEvents = noLiveEvents(account);
  }

  unwatchEvents(account) {
    if (this.liveEvents.account === account) this.liveEvents = noLiveEvents();
  }

  /** Live events up to `offset` (the hub's head at a resubscribe) may have been missed: reload them. */
  eventsMissed(offset) {
    const live = this.liveEvents;
    if (live.account === null) return;
    live.lost = Math.max(live.lost, offset ?? live.head + 1);
    this.versions.events += 1;
    this.touch();
  }

  learnSystemMagic(magic) {
    if (magic === null || magic === undefined || magic === 0 || this.systemMagics.has(magic)) return;
    this.systemMagics.add(magic);
    this.versions.positions += 1;
    this.touch();
  }

  // --- account detail: live equity points ---------------------------------------------------
  watchEquity(account) {
    if (this.detail.account === account) return;
    this.detail = { account, series: [] };
    const rec = account ? this.accounts.get(account) : null;
    if (rec) this._addPoint(rec.data);
  }

  _addPoint(summary) {
    const s = summary.state;
    if (!s) return;
    const ts = summary.updatedAt || this.serverNow();
    const series = this.detail.series;
    const last = series[series.length - 1];
    if (last && ts - last[0] < SERIES_STEP_MS) {
      last[1] = s.equity;
      last[2] = s.balance;
    } else {
      series.push([ts, s.equity, s.balance]);
      if (series.length > SERIES_POINTS) series.shift();
    }
  }
}

function noLiveEvents(account = null) {
  return { account, list: [], offsets: new Set(), head: 0, lost: 0 };
}

/** Was summary `a` made before `b`? (`asOf`: the server time its status was judged.) */
function isOlder(a, b) {
  return (a.asOf ?? 0) < (b.asOf ?? 0);
}

function markFlashes(rec, next) {
  const prev = rec.data;
  const at = performance.now();
  for (const [field, get] of FLASHED) {
    const a = get(prev);
    const b = get(next);
    if (a !== b && b !== undefined && b !== null) {
      rec.flash[field] = { at, dir: typeof a === 'number' && typeof b === 'number' && b < a ? 'down' : 'up' };
    }
  }
}
