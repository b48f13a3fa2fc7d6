// Positions: every open position across the fleet (or one account's), filterable by account and symbol;
// trades of the hedge system (magic numbers learned from events flagged `system`) are marked.

import { dateTimeUTC, money, price, signClass, signedMoney, volume } from '../format.js';
import { html, useMemo } from '../ui.js';
import { VirtualTable, sortRows } from './table.js';

const total = (p) => (p.profit || 0) + (p.swap || 0) + (p.commission || 0);

const ALL_COLUMNS = [
  { key: 'account', label: 'Account', width: '140px', value: (r) => r.account },
  { key: 'id', label: 'Position', num: true, width: '96px', value: (r) => r.p.id },
  { key: 'symbol', label: 'Symbol', width: '84px', value: (r) => r.p.symbol },
  { key: 'side', label: 'Side', width: '44px', value: (r) => r.p.side },
  { key: 'volume', label: 'Volume', num: true, width: '64px', value: (r) => r.p.volume },
  { key: 'openPrice', label: 'Open', num: true, width: '84px', value: (r) => r.p.openPrice },
  { key: 'price', label: 'Price', num: true, width: '84px', value: (r) => r.p.price },
  { key: 'sl', label: 'SL', num: true, width: '78px', value: (r) => r.p.sl || null },
  { key: 'tp', label: 'TP', num: true, width: '78px', value: (r) => r.p.tp || null },
  { key: 'profit', label: 'P/L', num: true, width: '88px', value: (r) => r.p.profit },
  { key: 'swap', label: 'Swap', num: true, width: '64px', value: (r) => r.p.swap },
  { key: 'magic', label: 'Magic', num: true, width: '92px', value: (r) => r.p.magic },
  { key: 'comment', label: 'Comment', width: '120px', value: (r) => r.p.comment },
  { key: 'openTime', label: 'Opened (UTC)', width: '140px', value: (r) => r.p.openTime },
];

export function positionRows(store, { account = '', symbol = '', systemOnly = false } = {}) {
  const acc = account.trim().toLowerCase();
  const sym = symbol.trim().toLowerCase();
  const rows = [];
  for (const [id, rec] of store.positions) {
    if (acc && !id.toLowerCase().includes(acc)) continue;
    for (const p of rec.list) {
      if (sym && !p.symbol.toLowerCase().includes(sym)) continue;
      const system = store.systemMagics.has(p.magic);
      if (systemOnly && !system) continue;
      rows.push({ key: `${id}:${p.id}`, account: id, p, rec, system });
    }
  }
  return rows;
}

function PositionRow({ store, row, showAccount, pnow }) {
  const { p, system } = row;
  const stale = store.isStale(row.rec);
  const digits = store.digitsOf(p.symbol, p.openPrice);
  return html`
    <tr class=${`${stale ? 'stale' : ''} ${system ? 'system' : ''}`} data-testid="position-row" data-account=${row.account} data-symbol=${p.symbol} data-position=${p.id}>
      ${showAccount && html`<td data-col="account"><a href=${`#/account/${encodeURIComponent(row.account)}`}>${row.account}</a></td>`}
      <td data-col="id" class="num" title=${p.ticket && p.ticket !== p.id ? `ticket ${p.ticket}` : ''}>${p.id}</td>
      <td data-col="symbol">${p.symbol}</td>
      <td data-col="side"><span class=${`side ${p.side}`}>${p.side}</span></td>
      <td data-col="volume" class="num">${volume(p.volume)}</td>
      <td data-col="openPrice" class="num">${price(p.openPrice, digits)}</td>
      <td data-col="price" class="num">${price(p.price, digits)}</td>
      <td data-col="sl" class="num dim">${price(p.sl, digits)}</td>
      <td data-col="tp" class="num dim">${price(p.tp, digits)}</td>
      <td data-col="profit" class=${`num ${signClass(p.profit)}`} title=${`with swap and commission: ${money(total(p))}`}>${signedMoney(p.profit)}</td>
      <td data-col="swap" class="num dim">${money(p.swap)}</td>
      <td data-col="magic" class="num">${system && html`<span class="badge sys" data-testid="system-badge" title="hedge-system trade">SYS</span> `}${p.magic || ''}</td>
      <td data-col="comment" title=${p.comment || ''}>${p.comment || ''}</td>
      <td data-col="openTime">${dateTimeUTC(p.openTime)}</td>
    </tr>
  `;
}

/** A positions table; `showAccount` false inside an account's detail page. */
export function PositionsTable({ store, rows, sort, onSort, showAccount = true, testid = 'positions-table' }) {
  const columns = showAccount ? ALL_COLUMNS : ALL_COLUMNS.slice(1);
  const sorted = useMemo(() => sortRows(rows, columns, sort), [rows, sort.key, sort.dir, showAccount]);
  const pnow = performance.now();
  return html`<${VirtualTable}
    testid=${testid}
    columns=${columns}
    rows=${sorted}
    sort=${sort}
    onSort=${onSort}
    empty="No open position"
    renderRow=${(row) => html`<${PositionRow} key=${row.key} store=${store} row=${row} showAccount=${showAccount} pnow=${pnow} />`}
  />`;
}

export function Positions({ store }) {
  const ui = store.ui.positions;
  const set = (patch) => {
    Object.assign(ui, patch);
    store.touch();
  };
  const rows = useMemo(
    () => positionRows(store, { account: ui.account, symbol: ui.symbol, systemOnly: ui.system }),
    [store.versions.positions, ui.account, ui.symbol, ui.system],
  );
  const symbols = useMemo(() => [...new Set(rows.map((r) => r.p.symbol))].sort(), [rows]);
  let pl = 0;
  let lots = 0;
  for (const r of rows) {
    pl += total(r.p);
    lots += r.p.volume;
  }
  return html`
    <section class="panel positions" data-testid="positions">
      <div class="toolbar">
        <h2>Positions</h2>
        <input type="search" data-testid="positions-account-filter" placeholder="account" value=${ui.account} onInput=${(e) => set({ account: e.currentTarget.value })} />
        <input type="search" list="symbol-list" data-testid="positions-symbol-filter" placeholder="symbol" value=${ui.symbol} onInput=${(e) => set({ symbol: e.currentTarget.value })} />
        <datalist id="symbol-list">${symbols.map((s) => html`<option key=${s} value=${s} />`)}</datalist>
        <label class="check"><input type="checkbox" checked=${ui.system} onChange=${(e) => set({ system: e.currentTarget.checked })} /> system trades only</label>
        <span class="count" data-testid="positions-count">${rows.length} positions · ${volume(lots)} lots · P/L <b class=${signClass(pl)}>${signedMoney(pl)}</b></span>
      </div>
      <${PositionsTable} store=${store} rows=${rows} sort=${ui.sort} onSort=${(sort) => set({ sort })} />
    </section>
  `;
}
