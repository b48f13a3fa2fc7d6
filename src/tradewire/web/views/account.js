// Account detail: figures, the equity and balance chart (the recent past from REST plus live updates),
// its open positions, its alerts and its event history (REST, with filters and paging).

import uPlot from '../vendor/uplot/uPlot.esm.js';
import {
  accountLabel,
  age,
  dateTimeUTC,
  integer,
  marginRisk,
  money,
  parseUTCInput,
  percent,
  price,
  signClass,
  signedMoney,
  timeUTC,
  volume,
} from '../format.js';
import { html, useEffect, useMemo, useRef, useState } from '../ui.js';
import { AlertsFeed } from './alerts.js';
import { PositionsTable, positionRows } from './positions.js';

const CHART_HEIGHT = 240;
const PAGE_SIZE = 50;
const EVENT_WIDTHS = ['150px', '64px', '76px', '130px', '96px', '52px', '72px', '92px', '96px', '', '100px', '72px'];
const AXIS = { stroke: '#8b949e', grid: { stroke: '#21262d', width: 1 }, ticks: { stroke: '#30363d', width: 1 } };

// Axis labels: whole units once the scale is wide enough, so 100,200 fits where 100,200.00 would be cut.
const axisMoney = (v) => (Math.abs(v) >= 1000 ? integer(v) : money(v));

// --- chart ----------------------------------------------------------------------------------------
function chartData(past, live) {
  // One point a minute from REST, then the live points (one a second) from the channel since the page opened.
  const firstLive = live.length ? live[0][0] : Infinity;
  const points = past.filter((p) => p[0] < firstLive).concat(live);
  return [points.map((p) => p[0] / 1000), points.map((p) => p[1]), points.map((p) => p[2])];
}

function EquityChart({ store, api, account }) {
  const box = useRef(null);
  const [note, setNote] = useState('loading the recent past…');

  useEffect(() => {
    let alive = true;
    let past = [];
    store.watchEquity(account);
    const opts = {
      width: box.current.clientWidth || 600,
      height: CHART_HEIGHT,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
      scales: { x: { time: true } },
      cursor: { drag: { x: true, y: false } },
      legend: { live: true },
      series: [
        {},
        { label: 'Equity', stroke: '#39c5ff', width: 1.5, fill: 'rgba(57,197,255,0.08)', value: (u, v) => money(v) },
        { label: 'Balance', stroke: '#f0b429', width: 1.5, dash: [4, 3], value: (u, v) => money(v) },
      ],
      axes: [{ ...AXIS }, { ...AXIS, size: 84, values: (u, vals) => vals.map(axisMoney) }],
    };
    const plot = new uPlot(opts, chartData([], store.detail.series), box.current);
    const redraw = () => plot.setData(chartData(past, store.detail.series));
    api
      .get(`accounts/${encodeURIComponent(account)}/equity`)
      .then((res) => {
        if (!alive) return;
        past = res.items.map((p) => [p.ts, p.equity, p.balance]);
        setNote(`one point a minute from the hub (${past.length}), then live`);
        redraw();
      })
      .catch((err) => alive && setNote(`recent past unavailable: ${err.message}`));
    const timer = setInterval(redraw, 1000); // a chart needs no more than one redraw a second
    const resize = new ResizeObserver(() => box.current && plot.setSize({ width: box.current.clientWidth, height: CHART_HEIGHT }));
    resize.observe(box.current);
    return () => {
      alive = false;
      clearInterval(timer);
      resize.disconnect();
      plot.destroy();
      store.watchEquity(null);
    };
  }, [account]);

  return html`
    <section class="panel chart" data-testid="equity-chart">
      <div class="toolbar"><h2>Equity and balance</h2><span class="count">${note}</span></div>
      <div class="chart-box" ref=${box}></div>
    </section>
  `;
}

// --- event history --------------------------------------------------------------------------------
function EventRow({ store, ev, live }) {
  const p = ev.position || {};
  const system = ev.system || store.systemMagics.has(p.magic);
  const digits = store.digitsOf(p.symbol, p.openPrice);
  const at = ev.event === 'CLOSE' && ev.closePrice ? ev.closePrice : p.openPrice;
  return html`
    <tr class=${`${live ? 'live-new' : ''} ${system ? 'system' : ''}`} data-testid="event-row" data-event=${ev.event} data-position=${ev.positionId} data-offset=${ev.offset}>
      <td>${dateTimeUTC(ev.ts)}</td>
      <td><span class=${`ev ${ev.event}`}>${ev.event}</span></td>
      <td class="dim">${ev.source}</td>
      <td class="num">${ev.positionId}</td>
      <td>${p.symbol}</td>
      <td><span class=${`side ${p.side}`}>${p.side}</span></td>
      <td class="num">${volume(p.volume)}</td>
      <td class="num">${price(at, digits)}</td>
      <td class=${`num ${signClass(ev.profit)}`}>${ev.profit === undefined || ev.profit === null ? '' : signedMoney(ev.profit)}</td>
      <td class="dim" title=${ev.reason || ''}>${ev.reason || ''}</td>
      <td class="num">${system && html`<span class="badge sys" data-testid="system-badge">SYS</span> `}${p.magic || ''}</td>
      <td class="num dim">${ev.offset}</td>
    </tr>
  `;
}

/** Would the history's filters (REST's: `from` inclusive, `to` exclusive, UTC ms) include this event? */
function matches(ev, type, from, to) {
  return (!type || ev.event === type) && (from === null || ev.ts >= from) && (to === null || ev.ts < to);
}

function EventHistory({ store, api, account }) {
  const [filters, setFilters] = useState({ type: '', from: '', to: '' });
  const [page, setPage] = useState({ items: [], next: null, cursors: [null], index: 0, loading: true, error: null, covered: 0 });
  const latest = useRef(0); // the newest request: an older one's answer, come later, is not shown

  // While the page is open the store keeps this account's live events, from before its first REST request
  // (effects run in order), so none falls between the two; a busy fleet's events do not push them out.
  useEffect(() => {
    store.watchEvents(account);
    return () => store.unwatchEvents(account);
  }, [account]);

  const load = (cursor, index, cursors) => {
    const request = ++latest.current;
    // Every live event received so far (or known missed, up to `lost`) is in this answer, if the filters take it.
    const covered = Math.max(store.liveEvents.head, store.liveEvents.lost);
    setPage((p) => ({ ...p, loading: true, error: null }));
    api
      .get('events', {
        account,
        type: filters.type,
        from: parseUTCInput(filters.from),
        to: parseUTCInput(filters.to),
        limit: PAGE_SIZE,
        cursor,
      })
      .then((res) => {
        if (request !== latest.current) return;
        for (const ev of res.items) if (ev.system && ev.position) store.learnSystemMagic(ev.position.magic);
        setPage({ items: res.items, next: res.nextCursor, cursors, index, loading: false, error: null, covered });
      })
      .catch((err) => request === latest.current && setPage((p) => ({ ...p, loading: false, error: err.message })));
  };
  useEffect(() => load(null, 0, [null]), [account, filters.type, filters.from, filters.to]);

  // Live events were missed (a reconnect's gap too long to replay, or more than the store keeps arrived):
  // the first page is read again. Other pages are older than any of them; the way back to the first reloads it.
  const { lost } = store.liveEvents;
  useEffect(() => {
    if (page.index === 0 && !page.loading && !page.error && lost > page.covered) load(null, 0, [null]);
  }, [lost, page]);

  // Live events newer than the first page, shown on top while the filters would include them.
  const top = page.items.length ? page.items[0].offset : 0;
  const live = useMemo(() => {
    if (page.index !== 0 || page.loading) return [];
    const from = parseUTCInput(filters.from);
    const to = parseUTCInput(filters.to);
    return store.liveEvents.list
      .filter((ev) => ev.offset > top && matches(ev, filters.type, from, to))
      .sort((a, b) => b.offset - a.offset);
  }, [store.versions.events, page, filters.type, filters.from, filters.to, account]);
  const set = (patch) => setFilters((f) => ({ ...f, ...patch }));
  const older = () => load(page.next, page.index + 1, [...page.cursors.slice(0, page.index + 1), page.next]);
  const newer = () => load(page.cursors[page.index - 1], page.index - 1, page.cursors);

  return html`
    <section class="panel events" data-testid="event-history">
      <div class="toolbar">
        <h2>Event history</h2>
        <select data-testid="events-type-filter" value=${filters.type} onChange=${(e) => set({ type: e.currentTarget.value })}>
          <option value="">all events</option>
          <option value="OPEN">OPEN</option>
          <option value="CLOSE">CLOSE</option>
          <option value="MODIFY">MODIFY</option>
        </select>
        <label>from <input type="datetime-local" data-testid="events-from" value=${filters.from} onChange=${(e) => set({ from: e.currentTarget.value })} /></label>
        <label>to <input type="datetime-local" data-testid="events-to" value=${filters.to} onChange=${(e) => set({ to: e.currentTarget.value })} /></label>
        <span class="dim">UTC</span>
        <span class="spacer"></span>
        <button data-testid="events-newer" disabled=${page.index === 0 || page.loading} onClick=${newer}>‹ Newer</button>
        <span class="count" data-testid="events-page">page ${page.index + 1}${page.loading ? ' …' : ''}</span>
        <button data-testid="events-older" disabled=${!page.next || page.loading} onClick=${older}>Older ›</button>
      </div>
      ${page.error && html`<div class="inline-error" data-testid="events-error">${page.error}</div>`}
      <div class="scroll">
        <table class="grid events-table" data-testid="events-table">
          <colgroup>
            ${EVENT_WIDTHS.map((w, i) => html`<col key=${i} style=${w ? `width:${w}` : ''} />`)}
          </colgroup>
          <thead>
            <tr>
              <th>Time (UTC)</th><th>Event</th><th>Source</th><th class="num">Position</th><th>Symbol</th><th>Side</th>
              <th class="num">Volume</th><th class="num">Price</th><th class="num">Profit</th><th>Reason</th>
              <th class="num">Magic</th><th class="num">Offset</th>
            </tr>
          </thead>
          <tbody>
            ${live.map((ev) => html`<${EventRow} key=${`l${ev.offset}`} store=${store} ev=${ev} live=${true} />`)}
            ${page.items.map((ev) => html`<${EventRow} key=${ev.offset} store=${store} ev=${ev} />`)}
            ${!page.loading && page.items.length + live.length === 0 && html`<tr class="empty"><td colspan="12">No event</td></tr>`}
          </tbody>
        </table>
      </div>
    </section>
  `;
}

// --- the page -------------------------------------------------------------------------------------
function Kpi({ label, value, cls = '', testid, title = '' }) {
  return html`<div class="kpi" title=${title}><span class="k">${label}</span><span class=${`v ${cls}`} data-testid=${testid}>${value}</span></div>`;
}

export function AccountDetail({ store, api, actions, account }) {
  const rec = store.accounts.get(account);
  const ui = store.ui.detail;
  const rows = useMemo(() => positionRows(store).filter((r) => r.account === account), [store.versions.positions, account]);
  if (!rec) {
    return html`<section class="panel detail" data-testid="account-detail" data-account=${account}>
      <div class="toolbar"><a href="#/fleet">‹ Fleet</a><h2>${account}</h2></div>
      <p class="empty">This account has not been seen by the hub yet.</p>
    </section>`;
  }
  const a = rec.data;
  const s = a.state || {};
  const stale = store.isStale(rec);
  const status = stale ? 'stale' : a.status;
  const risk = marginRisk(a.state, a.info?.platform);
  const now = store.serverNow();
  const i = a.info;
  return html`
    <div class=${`detail ${stale ? 'stale' : ''}`} data-testid="account-detail" data-account=${a.id}>
      <div class="detail-head">
        <a href="#/fleet" class="back">‹ Fleet</a>
        <h2>${a.id}</h2>
        <span class=${`status ${status}`} data-testid="detail-status">${status}</span>
        <span class="ident">
          ${accountLabel(i)}${i ? ` · ${i.broker || '?'} · ${i.platform} · ${i.currency} · 1:${i.leverage}${i.ea ? ` · ${i.ea}` : ''}` : ''}
        </span>
      </div>
      <div class="kpis">
        <${Kpi} label="Balance" value=${money(s.balance)} testid="kpi-balance" />
        <${Kpi} label="Equity" value=${money(s.equity)} testid="kpi-equity" />
        <${Kpi} label="Floating P/L" value=${signedMoney(a.floatingProfit)} cls=${signClass(a.floatingProfit)} testid="kpi-float" />
        <${Kpi} label="Margin" value=${money(s.margin)} testid="kpi-margin" />
        <${Kpi} label="Free margin" value=${money(s.freeMargin)} testid="kpi-free" />
        <${Kpi}
          label="Margin level"
          value=${risk.unit === '%' ? percent(risk.value) : money(risk.value)}
          cls=${`lvl lvl-${risk.risk}`}
          testid="kpi-level"
          title=${`margin call ${risk.call ?? '—'}${risk.unit}, stop out ${risk.stop ?? '—'}${risk.unit}`}
        />
        <${Kpi} label="Positions" value=${rec.positionCount()} testid="kpi-positions" />
        <${Kpi} label="Connected since" value=${timeUTC(a.connectedAt)} title=${dateTimeUTC(a.connectedAt)} testid="kpi-connected" />
        <${Kpi} label="Updated" value=${a.updatedAt ? `${age(now - a.updatedAt)} ago` : '—'} testid="kpi-updated" />
      </div>
      <div class="detail-grid">
        <${EquityChart} store=${store} api=${api} account=${a.id} />
        <${AlertsFeed} store=${store} actions=${actions} compact=${true} account=${a.id} />
      </div>
      <section class="panel detail-positions" data-testid="account-positions">
        <div class="toolbar"><h2>Open positions</h2><span class="count">${rows.length}</span></div>
        <${PositionsTable}
          store=${store}
          rows=${rows}
          sort=${ui.sort}
          showAccount=${false}
          testid="account-positions-table"
          onSort=${(sort) => {
            ui.sort = sort;
            store.touch();
          }}
        />
      </section>
      <${EventHistory} store=${store} api=${api} account=${a.id} />
    </div>
  `;
}
