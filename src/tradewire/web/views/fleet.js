// Fleet: one row per account, sortable and filterable; changed cells flash, margin level is coloured
// against the account's own margin-call and stop-out levels.

import { accountLabel, age, ageClass, marginRisk, money, percent, signClass, signedMoney } from '../format.js';
import { html, useMemo } from '../ui.js';
import { VirtualTable, sortRows } from './table.js';

const STATUS_ORDER = { live: 0, lost: 1, never: 2 };
const RISK_ORDER = { stopout: 0, call: 1, near: 2, ok: 3, none: 4 };

export const FLEET_COLUMNS = [
  { key: 'status', label: 'Status', width: '62px', value: (r) => STATUS_ORDER[r.data.status] ?? 3 },
  { key: 'id', label: 'Account', width: '124px', value: (r) => r.data.id },
  { key: 'login', label: 'Login@Server', value: (r) => accountLabel(r.data.info) },
  { key: 'platform', label: 'Plat', width: '42px', value: (r) => r.data.info?.platform },
  { key: 'currency', label: 'Ccy', width: '40px', value: (r) => r.data.info?.currency },
  { key: 'balance', label: 'Balance', num: true, width: '108px', value: (r) => r.data.state?.balance },
  { key: 'equity', label: 'Equity', num: true, width: '108px', value: (r) => r.data.state?.equity },
  { key: 'floatingProfit', label: 'Float P/L', num: true, width: '96px', value: (r) => r.data.floatingProfit },
  { key: 'margin', label: 'Margin', num: true, width: '96px', value: (r) => r.data.state?.margin },
  { key: 'freeMargin', label: 'Free margin', num: true, width: '108px', value: (r) => r.data.state?.freeMargin },
  {
    key: 'marginLevel',
    label: 'Margin lvl',
    num: true,
    width: '92px',
    title: 'equity / margin; coloured against the account’s margin-call and stop-out levels',
    value: (r) => r.data.state?.marginLevel,
  },
  { key: 'positions', label: 'Pos', num: true, width: '44px', value: (r) => r.positionCount() },
  { key: 'age', label: 'Updated', num: true, width: '64px', title: 'age of the last update', value: (r) => -(r.data.updatedAt || 0) },
];

function matches(rec, text) {
  const a = rec.data;
  const i = a.info;
  const hay = `${a.id} ${i ? `${i.login} ${i.server} ${i.broker} ${i.platform} ${i.currency}` : ''}`.toLowerCase();
  return hay.includes(text);
}

export function fleetRows(store) {
  const ui = store.ui.fleet;
  const text = ui.filter.trim().toLowerCase();
  const rows = [];
  for (const rec of store.accounts.values()) {
    if (ui.status !== 'all' && rec.data.status !== ui.status) continue;
    if (ui.risk && RISK_ORDER[marginRisk(rec.data.state, rec.data.info?.platform).risk] > 2) continue;
    if (text && !matches(rec, text)) continue;
    rows.push(rec);
  }
  return sortRows(rows, FLEET_COLUMNS, ui.sort);
}

function levelTitle(risk) {
  if (risk.risk === 'none') return 'no margin in use';
  const u = risk.unit;
  return `margin call at ${risk.call ?? '—'}${u}, stop out at ${risk.stop ?? '—'}${u}`;
}

function FleetRow({ store, rec, now, pnow }) {
  const a = rec.data;
  const s = a.state;
  const stale = store.isStale(rec);
  const risk = marginRisk(s, a.info?.platform);
  const fl = (field) => store.flashOf(rec, field, pnow);
  const ageMs = a.updatedAt ? now - a.updatedAt : null;
  const status = stale ? 'stale' : a.status;
  const open = () => {
    location.hash = `#/account/${encodeURIComponent(a.id)}`;
  };
  return html`
    <tr class=${`${stale ? 'stale' : ''} risk-${risk.risk}`} data-testid="fleet-row" data-account=${a.id} data-status=${status} onClick=${open}>
      <td data-col="status" title=${stale ? `last known: ${a.status}` : ''}><span class=${`status ${status} ${fl('status')}`}>${status}</span></td>
      <td data-col="id"><a href=${`#/account/${encodeURIComponent(a.id)}`}>${a.id}</a></td>
      <td data-col="login" title=${a.info?.broker || ''}>${accountLabel(a.info)}</td>
      <td data-col="platform">${a.info?.platform || ''}</td>
      <td data-col="currency">${a.info?.currency || ''}</td>
      <td data-col="balance" class=${`num ${fl('balance')}`}>${money(s?.balance)}</td>
      <td data-col="equity" class=${`num ${fl('equity')}`}>${money(s?.equity)}</td>
      <td data-col="floatingProfit" class=${`num ${signClass(a.floatingProfit)} ${fl('floatingProfit')}`}>${signedMoney(a.floatingProfit)}</td>
      <td data-col="margin" class=${`num ${fl('margin')}`}>${money(s?.margin)}</td>
      <td data-col="freeMargin" class=${`num ${s && s.freeMargin < 0 ? 'neg' : ''} ${fl('freeMargin')}`}>${money(s?.freeMargin)}</td>
      <td data-col="marginLevel" class=${`num level ${fl('marginLevel')}`} title=${levelTitle(risk)}>
        <span class=${`lvl lvl-${risk.risk}`}>${risk.unit === '%' ? percent(risk.value) : money(risk.value)}</span>
      </td>
      <td data-col="positions" class=${`num ${fl('positions')}`}>${rec.positionCount()}</td>
      <td data-col="age" class=${`num age ${ageClass(ageMs)}`}>${age(ageMs)}</td>
    </tr>
  `;
}

export function Fleet({ store }) {
  const ui = store.ui.fleet;
  const set = (patch) => {
    Object.assign(ui, patch);
    store.touch();
  };
  const rows = useMemo(
    () => fleetRows(store),
    [store.versions.accounts, ui.filter, ui.status, ui.risk, ui.sort.key, ui.sort.dir],
  );
  const now = store.serverNow();
  const pnow = performance.now();
  return html`
    <section class="panel fleet" data-testid="fleet">
      <div class="toolbar">
        <h2>Fleet</h2>
        <input
          type="search"
          data-testid="fleet-filter"
          placeholder="filter: account, login, server, broker"
          value=${ui.filter}
          onInput=${(e) => set({ filter: e.currentTarget.value })}
        />
        <select data-testid="fleet-status-filter" value=${ui.status} onChange=${(e) => set({ status: e.currentTarget.value })}>
          <option value="all">all statuses</option>
          <option value="live">live</option>
          <option value="lost">lost</option>
          <option value="never">never</option>
        </select>
        <label class="check"><input type="checkbox" checked=${ui.risk} onChange=${(e) => set({ risk: e.currentTarget.checked })} /> near margin call</label>
        <span class="count" data-testid="fleet-count">${rows.length} of ${store.accounts.size} accounts</span>
      </div>
      <${VirtualTable}
        testid="fleet-table"
        columns=${FLEET_COLUMNS}
        rows=${rows}
        sort=${ui.sort}
        onSort=${(sort) => set({ sort })}
        empty=${store.accounts.size ? 'No account matches the filter' : 'No account has connected yet'}
        renderRow=${(rec) => html`<${FleetRow} key=${rec.data.id} store=${store} rec=${rec} now=${now} pnow=${pnow} />`}
      />
    </section>
  `;
}
