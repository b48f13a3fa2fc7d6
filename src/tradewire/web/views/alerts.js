// Alerts: the live feed (raised / acknowledged / resolved), newest first, with an acknowledge button.
// Whether the key may acknowledge is learned by trying: a read key gets the hub's 403 message, shown here.

import { dateTimeUTC, timeUTC } from '../format.js';
import { html, useMemo } from '../ui.js';

const TYPES = ['MARGIN_CALL', 'STOP_OUT', 'CONNECTION_LOST', 'SYSTEM_ERROR', 'STALE_DATA'];
const SHOWN = 300;
const SHOWN_COMPACT = 60;

export function alertRows(store, { state = 'all', severity = 'all', type = 'all', account = null } = {}) {
  const rows = [];
  for (const a of store.alerts.values()) {
    if (account && a.account !== account) continue;
    if (state === 'open' && a.resolvedAt) continue;
    if (state === 'unacked' && (a.ackedAt || a.resolvedAt)) continue;
    if (severity !== 'all' && a.severity !== severity) continue;
    if (type !== 'all' && a.type !== type) continue;
    rows.push(a);
  }
  rows.sort((x, y) => y.raisedAt - x.raisedAt || (y.offset || 0) - (x.offset || 0));
  return rows;
}

function AlertItem({ store, alert: a, actions }) {
  const open = !a.resolvedAt;
  const error = store.ackErrors.get(a.id);
  const busy = store.acking.has(a.id);
  const resolution = a.data && typeof a.data.resolution === 'string' ? a.data.resolution : '';
  return html`
    <li
      class=${`alert sev-${a.severity} ${open ? 'open' : 'resolved'} ${a.ackedAt ? 'acked' : 'unacked'}`}
      data-testid="alert-row"
      data-alert-id=${a.id}
      data-type=${a.type}
      data-account=${a.account}
      data-severity=${a.severity}
      data-state=${open ? 'open' : 'resolved'}
      data-acked=${a.ackedAt ? 'yes' : 'no'}
    >
      <div class="alert-head">
        <span class=${`badge sev ${a.severity}`}>${a.severity === 'CRITICAL' ? 'CRIT' : a.severity}</span>
        <span class="type">${a.type}</span>
        <a class="acct" href=${`#/account/${encodeURIComponent(a.account)}`}>${a.account}</a>
        <span class="time" title=${dateTimeUTC(a.raisedAt)}>${timeUTC(a.raisedAt)}</span>
      </div>
      <div class="msg" data-testid="alert-message">${a.message}</div>
      <div class="alert-foot">
        <span class=${`state ${open ? 'open' : 'resolved'}`} data-testid="alert-state" title=${resolution}>
          ${open ? 'OPEN' : `RESOLVED ${timeUTC(a.resolvedAt)}`}
        </span>
        ${a.ackedAt
          ? html`<span class="acked" data-testid="alert-acked">ack ${timeUTC(a.ackedAt)} by ${a.ackedBy || '?'}</span>`
          : html`<button
              class="ack"
              data-testid="ack-button"
              disabled=${busy}
              title=${store.role === 'read' ? 'this API key cannot acknowledge (read role)' : 'acknowledge'}
              onClick=${(e) => {
                e.stopPropagation();
                actions.ack(a.id);
              }}
            >
              ${busy ? '…' : 'Ack'}
            </button>`}
      </div>
      ${error && html`<div class="ack-error" data-testid="ack-error" role="alert">${error}</div>`}
    </li>
  `;
}

export function AlertsFeed({ store, actions, compact = false, account = null }) {
  const ui = store.ui.alerts;
  const set = (patch) => {
    Object.assign(ui, patch);
    store.touch();
  };
  const filter = compact ? { state: ui.compactState, account } : { ...ui, account };
  const rows = useMemo(
    () => alertRows(store, filter),
    [store.versions.alerts, filter.state, filter.severity, filter.type, account],
  );
  const shown = rows.slice(0, compact ? SHOWN_COMPACT : SHOWN);
  const { count } = store.unacked();
  return html`
    <section class=${`panel alerts ${compact ? 'compact' : ''}`} data-testid=${compact ? 'alerts-compact' : 'alerts'}>
      <div class="toolbar">
        <h2>${compact && !account ? html`<a href="#/alerts">Alerts</a>` : 'Alerts'}</h2>
        ${compact
          ? html`<select data-testid="alerts-compact-state" value=${ui.compactState} onChange=${(e) => set({ compactState: e.currentTarget.value })}>
              <option value="open">open</option>
              <option value="unacked">unacked</option>
              <option value="all">all</option>
            </select>`
          : html`
              <select data-testid="alerts-state-filter" value=${ui.state} onChange=${(e) => set({ state: e.currentTarget.value })}>
                <option value="all">all</option>
                <option value="open">open</option>
                <option value="unacked">open, unacked</option>
              </select>
              <select data-testid="alerts-severity-filter" value=${ui.severity} onChange=${(e) => set({ severity: e.currentTarget.value })}>
                <option value="all">any severity</option>
                <option value="CRITICAL">CRITICAL</option>
                <option value="HIGH">HIGH</option>
              </select>
              <select data-testid="alerts-type-filter" value=${ui.type} onChange=${(e) => set({ type: e.currentTarget.value })}>
                <option value="all">any type</option>
                ${TYPES.map((t) => html`<option key=${t} value=${t}>${t}</option>`)}
              </select>
            `}
        <span class="count">${rows.length} shown${account ? '' : ` · ${count} open unacked`}</span>
      </div>
      <ul class="feed" data-testid="alert-feed">
        ${shown.map((a) => html`<${AlertItem} key=${a.id} store=${store} alert=${a} actions=${actions} />`)}
        ${rows.length === 0 && html`<li class="empty">No alert</li>`}
        ${rows.length > shown.length && html`<li class="more">${rows.length - shown.length} older not shown</li>`}
      </ul>
    </section>
  `;
}
