// The header (views, fleet counts, unacknowledged alerts, connection state, clock) and the connection
// banner, which says plainly when what is on screen is not live.

import { timeUTC } from '../format.js';
import { html } from '../ui.js';

const TABS = [
  ['fleet', 'Fleet'],
  ['positions', 'Positions'],
  ['prices', 'Prices'],
  ['exposure', 'Exposure'],
  ['alerts', 'Alerts'],
];
const RECONNECTED_SHOWN_MS = 4000;

function fleetCounts(store) {
  const counts = { live: 0, lost: 0, never: 0 };
  for (const rec of store.accounts.values()) counts[rec.data.status] = (counts[rec.data.status] || 0) + 1;
  return counts;
}

export function Header({ store, route, actions }) {
  const { count, critical } = store.unacked();
  const counts = fleetCounts(store);
  const state = store.conn.state;
  const cue = Date.now() < store.criticalUntil;
  return html`
    <header class=${`top ${cue ? 'cue' : ''}`} data-testid="header">
      <div class="brand">tradewire</div>
      <nav>
        ${TABS.map(
          ([name, label]) =>
            html`<a key=${name} href=${`#/${name}`} class=${route.view === name ? 'active' : ''} data-testid=${`tab-${name}`}>${label}</a>`,
        )}
      </nav>
      <span class="grow"></span>
      <span class=${`fleet-counts ${store.live ? '' : 'stale'}`} data-testid="fleet-counts" title=${store.live ? 'accounts by connection status' : 'last known, not live'}>
        <span class=${counts.live ? 'c-live' : ''}><b>${counts.live}</b> live</span>
        <span class=${counts.lost ? 'c-lost' : ''}><b>${counts.lost}</b> lost</span>
        <span><b>${counts.never}</b> never</span>
      </span>
      <a
        href="#/alerts"
        class=${`alert-count ${count ? 'some' : ''} ${critical ? 'critical' : ''}`}
        data-testid="alert-count"
        data-count=${count}
        title="open alerts nobody has acknowledged"
        onClick=${() => {
          store.ui.alerts.state = 'unacked';
        }}
      >
        <b>${count}</b> unacked
      </a>
      <button class=${`tool ${store.ui.sound ? 'on' : ''}`} data-testid="sound-toggle" title="beep on new CRITICAL alerts" onClick=${actions.toggleSound}>
        beep ${store.ui.sound ? 'on' : 'off'}
      </button>
      <span class=${`conn ${state}`} data-testid="conn-state" data-state=${state}>${state === 'live' ? 'LIVE' : state.toUpperCase()}</span>
      <span class="clock" data-testid="clock">${timeUTC(store.serverNow())} UTC</span>
      <button class="tool" data-testid="change-key" title="forget this API key and enter another" onClick=${actions.forgetKey}>key…</button>
    </header>
  `;
}

export function Banner({ store }) {
  const c = store.conn;
  if (c.state === 'reconnecting' || (c.state === 'connecting' && store.disconnectedAt)) {
    const wait = c.retryAt ? Math.max(0, Math.ceil((c.retryAt - Date.now()) / 1000)) : 0;
    const since = store.disconnectedAt ? timeUTC(store.disconnectedAt + store.clockSkew) : '';
    return html`<div class="banner reconnecting" data-testid="conn-banner" data-state="reconnecting" role="status">
      <b>Connection to the hub lost — reconnecting</b>
      ${c.retryAt ? ` (attempt ${c.attempt}, next in ${wait}s)` : ' …'}.
      Figures are frozen and marked stale since ${since} UTC.
      ${c.error && html`<span class="dim"> ${c.error}</span>`}
    </div>`;
  }
  if (c.state === 'connecting') {
    return html`<div class="banner connecting" data-testid="conn-banner" data-state="connecting" role="status">Connecting to the hub…</div>`;
  }
  if (c.state === 'live' && store.reconnectedAt && Date.now() - store.reconnectedAt < RECONNECTED_SHOWN_MS) {
    return html`<div class="banner reconnected" data-testid="conn-banner" data-state="reconnected" role="status">
      Reconnected — resubscribed; live figures are refreshing.
    </div>`;
  }
  if (store.notice) {
    return html`<div class="banner notice" data-testid="notice" role="status">${store.notice}</div>`;
  }
  return null;
}
