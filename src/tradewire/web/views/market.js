// Prices (bid / ask / spread with tick direction) and Exposure (net volume and P/L per symbol, with the
// unhedged net highlighted). Both come in a full-page and a compact (sidebar) form.

import { age, ageClass, price, signClass, signedMoney, signedVolume, volume } from '../format.js';
import { html, useMemo } from '../ui.js';
import { VirtualTable, sortRows } from './table.js';

const UNHEDGED_LOTS = 0.005; // below rounding: buy and sell cancel out

const spreadPoints = (rec) => Math.round((rec.data.ask - rec.data.bid) * 10 ** rec.digits);

const PRICE_COLUMNS = [
  { key: 'symbol', label: 'Symbol', width: '96px', value: (r) => r.data.symbol },
  { key: 'bid', label: 'Bid', num: true, width: '96px', value: (r) => r.data.bid },
  { key: 'ask', label: 'Ask', num: true, width: '96px', value: (r) => r.data.ask },
  { key: 'spread', label: 'Spread', num: true, width: '64px', title: 'in points', value: spreadPoints },
  { key: 'dir', label: '', width: '26px' },
  { key: 'age', label: 'Age', num: true, width: '56px', title: 'since the last tick', value: (r) => -r.recvAt },
];

function PriceRow({ store, rec, compact, pnow, now }) {
  const t = rec.data;
  const stale = store.isStale(rec);
  const flash = pnow - rec.changedAt < 600 ? `fl-${rec.dir}` : '';
  const ageMs = now - rec.recvAt;
  return html`
    <tr class=${stale ? 'stale' : ''} data-testid="price-row" data-symbol=${t.symbol} data-dir=${rec.dir}>
      <td data-col="symbol">${t.symbol}</td>
      <td data-col="bid" class=${`num ${flash}`}>${price(t.bid, rec.digits)}</td>
      <td data-col="ask" class=${`num ${flash}`}>${price(t.ask, rec.digits)}</td>
      <td data-col="spread" class="num dim">${spreadPoints(rec)}</td>
      <td data-col="dir" class=${`tick ${rec.dir}`}>${rec.dir === 'up' ? '▲' : rec.dir === 'down' ? '▼' : ''}</td>
      ${!compact && html`<td data-col="age" class=${`num age ${ageClass(ageMs)}`}>${age(ageMs)}</td>`}
    </tr>
  `;
}

export function Prices({ store, compact = false }) {
  const ui = store.ui.prices;
  const columns = compact ? PRICE_COLUMNS.slice(0, 5) : PRICE_COLUMNS;
  const rows = useMemo(() => sortRows([...store.prices.values()], columns, ui.sort), [store.versions.prices, ui.sort.key, ui.sort.dir, compact]);
  const pnow = performance.now();
  const now = Date.now();
  return html`
    <section class=${`panel prices ${compact ? 'compact' : ''}`} data-testid=${compact ? 'prices-compact' : 'prices'}>
      <div class="toolbar">
        <h2>${compact ? html`<a href="#/prices">Prices</a>` : 'Prices'}</h2>
        <span class="count">${rows.length} symbols</span>
      </div>
      <${VirtualTable}
        testid="prices-table"
        compact=${compact}
        columns=${columns}
        rows=${rows}
        sort=${ui.sort}
        onSort=${(sort) => {
          ui.sort = sort;
          store.touch();
        }}
        empty="No price yet"
        renderRow=${(rec) => html`<${PriceRow} key=${rec.data.symbol} store=${store} rec=${rec} compact=${compact} pnow=${pnow} now=${now} />`}
      />
    </section>
  `;
}

const EXPOSURE_COLUMNS = [
  { key: 'symbol', label: 'Symbol', width: '92px', value: (r) => r.symbol },
  { key: 'buyVolume', label: 'Long', num: true, width: '72px', value: (r) => r.buyVolume },
  { key: 'sellVolume', label: 'Short', num: true, width: '72px', value: (r) => r.sellVolume },
  { key: 'netVolume', label: 'Net', num: true, width: '76px', value: (r) => r.netVolume },
  { key: 'bar', label: 'short | long', width: '110px' },
  { key: 'profit', label: 'P/L', num: true, width: '96px', value: (r) => r.profit },
  { key: 'positions', label: 'Pos', num: true, width: '48px', value: (r) => r.positions },
  { key: 'accounts', label: 'Accts', num: true, width: '52px', value: (r) => r.accounts },
];
const COMPACT_EXPOSURE = ['symbol', 'netVolume', 'bar', 'profit'];

function NetBar({ net, max }) {
  const share = max > 0 ? Math.min(1, Math.abs(net) / max) : 0;
  const width = `${(share * 50).toFixed(1)}%`;
  const style = net >= 0 ? `left:50%;width:${width}` : `right:50%;width:${width}`;
  return html`<div class="netbar"><span class=${net >= 0 ? 'long' : 'short'} style=${style}></span></div>`;
}

function ExposureRow({ row, max, stale, compact }) {
  const unhedged = Math.abs(row.netVolume) >= UNHEDGED_LOTS;
  return html`
    <tr class=${`${stale ? 'stale' : ''} ${unhedged ? 'unhedged' : 'hedged'}`} data-testid="exposure-row" data-symbol=${row.symbol} data-unhedged=${unhedged ? 'yes' : 'no'}>
      <td data-col="symbol">${row.symbol}</td>
      ${!compact && html`<td data-col="buyVolume" class="num">${volume(row.buyVolume)}</td>`}
      ${!compact && html`<td data-col="sellVolume" class="num">${volume(row.sellVolume)}</td>`}
      <td data-col="netVolume" class=${`num net ${signClass(row.netVolume)}`}>${signedVolume(row.netVolume)}</td>
      <td data-col="bar"><${NetBar} net=${row.netVolume} max=${max} /></td>
      <td data-col="profit" class=${`num ${signClass(row.profit)}`}>${signedMoney(row.profit)}</td>
      ${!compact && html`<td data-col="positions" class="num">${row.positions}</td>`}
      ${!compact && html`<td data-col="accounts" class="num">${row.accounts}</td>`}
    </tr>
  `;
}

export function Exposure({ store, compact = false }) {
  const ui = store.ui.exposure;
  const columns = compact ? EXPOSURE_COLUMNS.filter((c) => COMPACT_EXPOSURE.includes(c.key)) : EXPOSURE_COLUMNS;
  const data = store.exposure.data;
  const rows = useMemo(() => sortRows(data ? data.symbols : [], columns, ui.sort), [store.versions.exposure, ui.sort.key, ui.sort.dir, compact]);
  const stale = store.isStale(store.exposure);
  let max = 0;
  let pl = 0;
  let open = 0;
  for (const r of rows) {
    max = Math.max(max, Math.abs(r.netVolume));
    pl += r.profit;
    if (Math.abs(r.netVolume) >= UNHEDGED_LOTS) open += 1;
  }
  return html`
    <section class=${`panel exposure ${compact ? 'compact' : ''}`} data-testid=${compact ? 'exposure-compact' : 'exposure'}>
      <div class="toolbar">
        <h2>${compact ? html`<a href="#/exposure">Exposure</a>` : 'Exposure'}</h2>
        <span class="count" data-testid="exposure-summary">
          ${open} unhedged of ${rows.length} · P/L <b class=${signClass(pl)}>${signedMoney(pl)}</b>
        </span>
      </div>
      <${VirtualTable}
        testid="exposure-table"
        compact=${compact}
        columns=${columns}
        rows=${rows}
        sort=${ui.sort}
        onSort=${(sort) => {
          ui.sort = sort;
          store.touch();
        }}
        empty="No open position in the fleet"
        renderRow=${(row) => html`<${ExposureRow} key=${row.symbol} row=${row} max=${max} stale=${stale} compact=${compact} />`}
      />
    </section>
  `;
}
