// A small AWS AppSync Events WebSocket client with tradewire's extensions (README "Realtime channels"):
// `connection_init {payload: {batch: true}}` for batch frames, the snapshot sent after `subscribe_success`,
// and `offset` / `since` on durable channels. It reconnects with back-off and resubscribes by itself;
// durable subscriptions resume from the last offset they saw, so nothing is missed across a reconnect.

const SUBPROTOCOL = 'aws-appsync-event-ws';
const CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_KA_TIMEOUT_MS = 300_000;
const UNAUTHORIZED = 'UnauthorizedException';

/** The `header-<base64url(JSON)>` subprotocol that carries the API key during the upgrade. */
export function authSubprotocol(key, host) {
  const json = JSON.stringify({ host, 'x-api-key': key });
  const bytes = new TextEncoder().encode(json);
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return 'header-' + btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Back-off for attempt n (1, 2, ...): exponential, capped, with jitter so a fleet of tabs spreads out. */
export function backoffMs(attempt, minMs, maxMs, random = Math.random) {
  const base = Math.min(maxMs, minMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (0.75 + 0.5 * random()));
}

function firstError(msg) {
  const err = (msg.errors && msg.errors[0]) || {};
  return { type: err.errorType || 'Error', code: err.errorCode, message: err.message || 'unknown error' };
}

export class RealtimeClient {
  /**
   * @param {object} opts
   * @param {string} opts.url       ws(s)://host/event/realtime
   * @param {string} opts.key       API key
   * @param {(status: object) => void} opts.onStatus   connection state changes
   */
  constructor({ url, key, host = location.host, minBackoffMs = 500, maxBackoffMs = 10_000, onStatus = () => {} }) {
    this.url = url;
    this.key = key;
    this.host = host;
    this.minBackoffMs = minBackoffMs;
    this.maxBackoffMs = maxBackoffMs;
    this.onStatus = onStatus;
    this.subs = new Map();
    this.ws = null;
    this.state = 'idle'; // idle | connecting | live | reconnecting | unauthorized | closed
    this.attempt = 0;
    this.connects = 0; // successful connection_acks so far
    this.error = null;
    this.retryAt = null;
    this.lastActivity = 0;
    this.kaTimeoutMs = DEFAULT_KA_TIMEOUT_MS;
    this._nextId = 1;
    this._timer = null;
    this._watchdog = null;
  }

  start() {
    if (this.state === 'idle' || this.state === 'closed') this._connect();
    this._watchdog = setInterval(() => this._checkAlive(), 5_000);
  }

  stop() {
    this._setState('closed');
    clearTimeout(this._timer);
    clearInterval(this._watchdog);
    if (this.ws) this.ws.close(1000, 'closed by the page');
    this.ws = null;
  }

  /**
   * Subscribe to a channel (`/*` wildcards allowed). Kept across reconnects.
   * durable: resume with `since` after a reconnect. onSubscribed({recovered, resumed, offset}) runs after
   * every subscribe_success, before the snapshot/history that follows it.
   */
  subscribe(channel, { durable = false, onData, onSubscribed = () => {}, onError = () => {} }) {
    const sub = { id: `s${this._nextId++}`, channel, durable, lastOffset: null, onData, onSubscribed, onError };
    this.subs.set(sub.id, sub);
    if (this.state === 'live') this._sendSubscribe(sub);
    return {
      get lastOffset() {
        return sub.lastOffset;
      },
      unsubscribe: () => {
        this.subs.delete(sub.id);
        if (this.state === 'live') this._send({ type: 'unsubscribe', id: sub.id });
      },
    };
  }

  // --- connection ---------------------------------------------------------------------------
  _connect() {
    this._setState(this.connects === 0 && this.attempt === 0 ? 'connecting' : 'reconnecting');
    let ws;
    try {
      ws = new WebSocket(this.url, [SUBPROTOCOL, authSubprotocol(this.key, this.host)]);
    } catch (err) {
      this.error = String(err);
      this._scheduleReconnect();
      return;
    }
    this.ws = ws;
    const giveUp = setTimeout(() => ws.close(4000, 'no connection_ack in time'), CONNECT_TIMEOUT_MS);
    ws.onopen = () => this._send({ type: 'connection_init', payload: { batch: true } });
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      this.lastActivity = Date.now();
      this._onFrame(ev.data);
      if (this.state === 'live') clearTimeout(giveUp);
    };
    ws.onclose = (ev) => {
      clearTimeout(giveUp);
      if (ws !== this.ws) return;
      this.ws = null;
      this._onClose(ev);
    };
  }

  _checkAlive() {
    // No frame (data or `ka`) for longer than the server promised: the link is dead without a close.
    if (this.state === 'live' && this.ws && Date.now() - this.lastActivity > this.kaTimeoutMs) {
      this.ws.close(4000, 'keep-alive timeout');
    }
  }

  _onClose(ev) {
    if (this.state === 'unauthorized' || this.state === 'closed') return;
    if (ev.code === 4401) {
      this._fail(this.error || 'the hub refused the API key');
      return;
    }
    this.error = ev.reason || (ev.code ? `connection closed (${ev.code})` : 'connection lost');
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    this.attempt += 1;
    const delay = backoffMs(this.attempt, this.minBackoffMs, this.maxBackoffMs);
    this.retryAt = Date.now() + delay;
    this._setState('reconnecting');
    clearTimeout(this._timer);
    this._timer = setTimeout(() => {
      this.retryAt = null;
      this._connect();
    }, delay);
  }

  _fail(message) {
    this.error = message;
    clearTimeout(this._timer);
    this._setState('unauthorized');
    if (this.ws) this.ws.close(1000);
    this.ws = null;
  }

  _setState(state) {
    this.state = state;
    this.onStatus({
      state,
      attempt: this.attempt,
      retryAt: this.retryAt,
      error: this.error,
      connects: this.connects,
    });
  }

  _send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  _sendSubscribe(sub) {
    const msg = { type: 'subscribe', id: sub.id, channel: sub.channel };
    if (sub.durable && sub.lastOffset != null) msg.since = sub.lastOffset;
    sub.sentSince = msg.since ?? null;
    this._send(msg);
  }

  // --- frames -------------------------------------------------------------------------------
  _onFrame(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg.type === 'batch') {
      for (const item of msg.items) this._onMessage(item);
    } else {
      this._onMessage(msg);
    }
  }

  _onMessage(msg) {
    switch (msg.type) {
      case 'data':
        return this._onData(msg);
      case 'ka':
        return undefined;
      case 'connection_ack': {
        this.kaTimeoutMs = msg.connectionTimeoutMs ?? msg.payload?.connectionTimeoutMs ?? DEFAULT_KA_TIMEOUT_MS;
        this.attempt = 0;
        this.connects += 1;
        this.error = null;
        this._setState('live');
        for (const sub of this.subs.values()) this._sendSubscribe(sub);
        return undefined;
      }
      case 'connection_error': {
        const err = firstError(msg);
        if (err.type === UNAUTHORIZED || err.code === 401) return this._fail(err.message);
        this.error = err.message;
        return undefined;
      }
      case 'subscribe_success': {
        const sub = this.subs.get(msg.id);
        if (!sub) return undefined;
        // The head offset at subscribe time is where a subscription that has seen nothing resumes, and
        // where one whose gap was too long resumes (the page reloads the gap over REST). A recovered
        // subscription keeps its own offset until the replayed history moves it on.
        if (sub.durable && msg.offset != null && (sub.lastOffset == null || msg.recovered === false)) {
          sub.lastOffset = msg.offset;
        }
        sub.onSubscribed({ recovered: msg.recovered ?? null, resumed: sub.sentSince != null, offset: msg.offset });
        return undefined;
      }
      case 'subscribe_error': {
        const sub = this.subs.get(msg.id);
        const err = firstError(msg);
        if (err.type === UNAUTHORIZED) return this._fail(err.message);
        if (sub) sub.onError(err.message);
        return undefined;
      }
      default:
        return undefined; // unsubscribe_success, publish_*, error: nothing the dashboard needs
    }
  }

  _onData(msg) {
    const sub = this.subs.get(msg.id);
    if (!sub) return;
    if (msg.offset != null && (sub.lastOffset == null || msg.offset > sub.lastOffset)) sub.lastOffset = msg.offset;
    let event;
    try {
      event = JSON.parse(msg.event);
    } catch {
      return;
    }
    sub.onData(event, msg.offset ?? null);
  }
}
