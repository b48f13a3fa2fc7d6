// The dashboard's entry point: the API key, the realtime subscriptions, REST (re)loads, routing and actions.
// Messages go into the store; the page is rendered from it once per animation frame.

import { RealtimeClient, backoffMs } from './client.js';
import { makeApi } from './rest.js';
import { Store } from './store.js';
import { html, render } from './ui.js';
import { AccountDetail } from './views/account.js';
import { AlertsFeed } from './views/alerts.js';
import { Fleet } from './views/fleet.js';
import { Banner, Header } from './views/header.js';
import { KeyPrompt } from './views/keyprompt.js';
import { Exposure, Prices } from './views/market.js';
import { Positions } from './views/positions.js';

const KEY_ITEM = 'tradewire.apiKey';
const SOUND_ITEM = 'tradewire.sound';
const ALERTS_LOADED = 500;
const EPISODES = ['MARGIN_CALL', 'STOP_OUT', 'CONNECTION_LOST', 'STALE_DATA'];
const ACCOUNTS_REFRESH_MS = 30_000;
const RELOAD_RETRY_MIN_MS = 1000;
const RELOAD_RETRY_MAX_MS = 30_000;

// --- the API key: `/#key=...` once, then sessionStorage (this tab only) ---------------------------
// A malformed %-escape (a link mistyped or cut) is no reason to throw: the page would stay blank.
function decoded(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return null;
  }
}

function takeKey() {
  const match = location.hash.match(/^#key=([^&]*)/);
  if (match) {
    const key = decoded(match[1]); // malformed: ignored, and the page asks for a key
    if (key) sessionStorage.setItem(KEY_ITEM, key);
    history.replaceState(null, '', `${location.pathname}${location.search}#/fleet`); // out of sight and history
  }
  return sessionStorage.getItem(KEY_ITEM);
}

function useKey(key) {
  sessionStorage.setItem(KEY_ITEM, key);
  location.hash = '#/fleet';
  location.reload();
}

function parseRoute(hash) {
  const parts = hash.replace(/^#\/?/, '').split('/');
  const account = parts[0] === 'account' && parts[1] ? decoded(parts[1]) : null;
  if (account) return { view: 'account', account };
  const view = ['fleet', 'positions', 'prices', 'exposure', 'alerts'].includes(parts[0]) ? parts[0] : 'fleet';
  return { view };
}

// --- the page ---------------------------------------------------------------------------------------
function View({ store, api, actions, route }) {
  switch (route.view) {
    case 'positions':
      return html`<${Positions} store=${store} />`;
    case 'prices':
      return html`<${Prices} store=${store} />`;
    case 'exposure':
      return html`<${Exposure} store=${store} />`;
    case 'alerts':
      return html`<${AlertsFeed} store=${store} actions=${actions} />`;
    case 'account':
      return html`<${AccountDetail} key=${route.account} store=${store} api=${api} actions=${actions} account=${route.account} />`;
    default:
      return html`<div class="overview">
        <${Fleet} store=${store} />
        <aside class="sidebar">
          <${AlertsFeed} store=${store} actions=${actions} compact=${true} />
          <${Exposure} store=${store} compact=${true} />
          <${Prices} store=${store} compact=${true} />
        </aside>
      </div>`;
  }
}

function App({ store, api, actions }) {
  if (store.authError !== null) return html`<${KeyPrompt} error=${store.authError} onKey=${useKey} />`;
  const route = parseRoute(location.hash);
  return html`
    <div class=${`app ${store.live ? 'is-live' : 'is-stale'}`}>
      <${Header} store=${store} route=${route} actions=${actions} />
      <${Banner} store=${store} />
      <main class=${`view-${route.view}`}>
        <${View} store=${store} api=${api} actions=${actions} route=${route} />
      </main>
    </div>
  `;
}

// --- wiring -----------------------------------------------------------------------------------------
function initialUi() {
  return {
    fleet: { sort: { key: 'id', dir: 'asc' }, filter: '', status: 'all', risk: false },
    positions: { sort: { key: 'account', dir: 'asc' }, account: '', symbol: '', system: false },
    prices: { sort: { key: 'symbol', dir: 'asc' } },
    exposure: { sort: { key: 'symbol', dir: 'asc' } },
    alerts: { state: 'all', severity: 'all', type: 'all', compactState: 'open' },
    detail: { sort: { key: 'openTime', dir: 'desc' } },
    sound: localStorage.getItem(SOUND_ITEM) === 'on',
  };
}

function start(root, key) {
  const store = new Store();
  store.ui = initialUi();
  const api = makeApi(key);
  let audio = null;

  const refused = (message) => {
    sessionStorage.removeItem(KEY_ITEM);
    store.authError = message || 'invalid API key';
    client.stop();
    store.touch();
  };

  // REST failures other than a refused key are passing trouble: say so briefly, the realtime link carries on.
  const restFailed = (what, err, retryMs = null) => {
    if (err.status === 401) return refused(err.message);
    const retry = retryMs === null ? '' : ` (trying again in ${Math.ceil(retryMs / 1000)} s)`;
    store.notice = `Could not load ${what}: ${err.message}${retry}`;
    setTimeout(() => {
      store.notice = null;
      store.touch();
    }, 6000);
    store.touch();
    return undefined;
  };

  // A reload that must happen: on failure it is tried again with back-off (at least the Retry-After the hub
  // asked for); one asked for while it runs or waits to be retried runs once more, at once, when it is done.
  function retrying(what, run) {
    let running = false;
    let again = false;
    let attempt = 0;
    let timer = null;
    const go = async () => {
      if (running) {
        again = true;
        return;
      }
      clearTimeout(timer);
      timer = null;
      running = true;
      again = false;
      try {
        await run();
        attempt = 0;
      } catch (err) {
        if (err.status === 401) {
          again = false;
          refused(err.message);
        } else if (store.authError === null) {
          attempt += 1;
          const wait = Math.max(backoffMs(attempt, RELOAD_RETRY_MIN_MS, RELOAD_RETRY_MAX_MS), (err.retryAfter ?? 0) * 1000);
          restFailed(what, err, wait);
          timer = setTimeout(go, wait);
        }
      } finally {
        running = false;
      }
      if (again) go();
    };
    return go;
  }

  const reloadAccounts = () =>
    api
      .get('accounts')
      .then((res) => res.items.forEach((a) => store.applyAccount(a, true)))
      .catch((err) => restFailed('accounts', err));
  // The accounts channel is not told when an HTTP (MT4) account's liveness window lapses: re-read now and then.
  setInterval(() => store.live && reloadAccounts(), ACCOUNTS_REFRESH_MS);
  // The newest alerts, and apart from them every open episode (one per account and type at most): newest
  // first, a flood of one EA's errors would otherwise leave an older margin call out of the page.
  // What they return replaces the alerts held (an alert resolved in a gap too long to replay is in neither),
  // and a reload that fails (429, 503, the hub unreachable) is tried again until it succeeds.
  const reloadAlerts = retrying('alerts', async () => {
    store.beginAlertsReload();
    const pages = await Promise.all([
      api.get('alerts', { limit: ALERTS_LOADED }),
      ...EPISODES.map((type) => api.get('alerts', { state: 'open', type, limit: ALERTS_LOADED })),
    ]);
    store.replaceAlerts(pages.flatMap((res) => res.items));
  });
  const reloadExposure = () =>
    api
      .get('exposure')
      .then((res) => {
        if (store.exposure.epoch !== store.epoch) store.applyExposure({ ts: store.serverNow(), symbols: res.items });
      })
      .catch((err) => restFailed('exposure', err));
  const syncClock = async () => {
    const t0 = Date.now();
    const res = await api.get('healthz');
    store.clockSkew = Math.round(res.time - (t0 + Date.now()) / 2);
  };

  const client = new RealtimeClient({
    url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/event/realtime`,
    key,
    onStatus: (status) => {
      if (status.state === 'unauthorized') refused(status.error);
      else store.setConnection(status);
    },
  });
  // Latest-wins channels answer a subscribe with their current values (the snapshot). REST adds what no
  // channel has published since the hub started: accounts known only to the store, exposure at rest.
  client.subscribe('/trading/accounts/*', { onData: (a) => store.applyAccount(a), onSubscribed: reloadAccounts });
  client.subscribe('/trading/positions/*', { onData: (m) => store.applyPositions(m) });
  client.subscribe('/trading/prices/*', { onData: (t) => store.applyPrice(t) });
  client.subscribe('/trading/exposure', { onData: (x) => store.applyExposure(x), onSubscribed: reloadExposure });
  // Durable channels resume with `since`; only a first subscribe or a gap too long to replay needs REST
  // (for events: the account page being viewed reloads its first page).
  client.subscribe('/trading/events/*', {
    durable: true,
    onData: (ev) => store.applyEvent(ev),
    onSubscribed: ({ resumed, recovered, offset }) => {
      if (!resumed || recovered === false) store.eventsMissed(offset);
    },
  });
  client.subscribe('/trading/alerts/*', {
    durable: true,
    onData: (a) => store.applyAlert(a, true),
    onSubscribed: ({ resumed, recovered }) => {
      if (!resumed || recovered === false) reloadAlerts();
    },
  });

  const beep = () => {
    if (!store.ui.sound) return;
    audio = audio || new AudioContext();
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.type = 'square';
    osc.frequency.value = 880;
    gain.gain.value = 0.04;
    osc.connect(gain).connect(audio.destination);
    osc.start();
    osc.stop(audio.currentTime + 0.3);
  };
  store.onCritical = beep;

  const actions = {
    async ack(id) {
      store.acking.add(id);
      store.setAckError(id, null);
      try {
        const alert = await api.post(`alerts/${encodeURIComponent(id)}/ack`);
        store.role = 'admin';
        store.applyAlert(alert);
      } catch (err) {
        if (err.status === 401) refused(err.message);
        if (err.status === 403) store.role = 'read';
        store.setAckError(id, err.status ? `${err.message} (HTTP ${err.status})` : err.message);
      } finally {
        store.acking.delete(id);
        store.touch();
      }
    },
    toggleSound() {
      store.ui.sound = !store.ui.sound;
      localStorage.setItem(SOUND_ITEM, store.ui.sound ? 'on' : 'off');
      if (store.ui.sound) {
        audio = audio || new AudioContext(); // created in the click: browsers allow sound after a gesture
        audio.resume();
      }
      store.touch();
    },
    forgetKey() {
      sessionStorage.removeItem(KEY_ITEM);
      client.stop();
      location.hash = '';
      location.reload();
    },
  };

  store.onRender(() => {
    const { count } = store.unacked();
    document.title = count ? `(${count}) tradewire` : 'tradewire';
    render(html`<${App} store=${store} api=${api} actions=${actions} />`, root);
  });
  window.addEventListener('hashchange', () => {
    window.scrollTo(0, 0);
    store.touch();
  });

  syncClock().catch((err) => (err.status === 401 ? refused(err.message) : undefined));
  api
    .get('system-trades', { limit: 200 })
    .then((res) => res.items.forEach((t) => store.learnSystemMagic(t.magic)))
    .catch(() => {});
  client.start();
  store.touch();
  window.tradewire = { store, client, api }; // for the tests and the frame-rate benchmark
}

const root = document.getElementById('app');
const key = takeKey();
if (key) {
  start(root, key);
} else {
  render(html`<${KeyPrompt} error=${null} onKey=${useKey} />`, root);
}
