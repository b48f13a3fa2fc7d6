// Drives a tradewire hub with the REAL Amplify JS AppSync Events client (aws-amplify/data `events`).
//
//   node client.mjs <scenario> --base http://127.0.0.1:PORT --key KEY [options]
//
// Scenarios (see tests/test_amplify.py):
//   subscribe           events.connect('/trading/*') + subscribe; prints {"ready": true} once subscribed, then
//                       collects events until one matches --where (JSON of dotted path -> value).
//   publish-ws          admin key: subscribe to /custom/*, channel.publish() on --channel over the WebSocket.
//   post-http           admin key: subscribe to /custom/*, events.post(--channel, [..]) over HTTP.
//   publish-read-key    read key: channel.publish() and events.post() must both be refused.
//   bad-key-subscribe   --bad-key: connecting/subscribing with a wrong key must fail; with --key also a wrong
//                       per-subscribe key on a good connection.
//
// Options (environment fallbacks in brackets): --base [TRADEWIRE_URL], --key [TRADEWIRE_KEY], --bad-key,
// --channel (default /custom/notes), --where, --count (matching events to wait for), --timeout ms (default 20000).
// Set AMPLIFY_DEBUG=1 to log every WebSocket frame and Amplify's own debug log to stderr.
//
// Output: zero or more progress lines ({"ready": true}) and then ONE result line on stdout, exit 0; or
// {"ok": false, "error": ..., "frames": [...]} and exit 1. A global timeout makes it exit 1, never hang.

import { parseArgs } from 'node:util';
import WS from 'ws';

const { positionals, values: opt } = parseArgs({
  allowPositionals: true,
  options: {
    base: { type: 'string', default: process.env.TRADEWIRE_URL },
    key: { type: 'string', default: process.env.TRADEWIRE_KEY },
    'bad-key': { type: 'string', default: 'not-a-valid-key' },
    channel: { type: 'string', default: '/custom/notes' },
    where: { type: 'string', default: '{}' },
    count: { type: 'string', default: '1' },
    timeout: { type: 'string', default: '20000' },
  },
});
const scenario = positionals[0];
// stdout carries only our JSON lines: Amplify's ConsoleLogger (console.debug/log/info) goes to stderr.
for (const level of ['log', 'info', 'debug']) console[level] = (...args) => console.error(...args);
const DEBUG = !!process.env.AMPLIFY_DEBUG;
const frames = []; // every WebSocket frame both ways, for error reports
let finished = false;

function line(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function finish(code, obj) {
  if (finished) return;
  finished = true;
  const out = code === 0 ? { ok: true, scenario, ...obj } : { ok: false, scenario, ...obj, frames: frames.slice(-30) };
  process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(code));
}

function fail(error, extra = {}) {
  finish(1, { error: describe(error), ...extra });
}

function describe(err) {
  if (err === undefined || err === null) return String(err);
  if (err instanceof Error) {
    const out = { name: err.name, message: err.message };
    if (err.response?.statusCode) out.status = err.response.statusCode; // RestApiError from events.post
    if (typeof err.response?.body === 'string') out.body = err.response.body;
    return out;
  }
  if (typeof err === 'object' && Array.isArray(err.errors)) {
    // rxjs observer.error({errors: [GraphQLError-like]}) from the Amplify provider
    return { errors: err.errors.map((e) => e.message ?? e) };
  }
  try {
    return JSON.parse(JSON.stringify(err));
  } catch {
    return String(err);
  }
}

const timeoutMs = Number(opt.timeout);
setTimeout(() => fail(`global timeout after ${timeoutMs} ms`), timeoutMs);
process.on('unhandledRejection', (err) => fail(err, { where: 'unhandledRejection' }));
process.on('uncaughtException', (err) => fail(err, { where: 'uncaughtException' }));

if (!opt.base) fail('--base (or TRADEWIRE_URL) is required');

// Amplify always builds wss:// URLs (appsyncUrl.mjs rewrites http:// too); the hub under test is plain ws://.
globalThis.WebSocket = class extends WS {
  constructor(url, protocols) {
    super(String(url).replace(/^wss:/, 'ws:'), protocols);
    this.addEventListener('message', (m) => {
      frames.push({ in: String(m.data) });
      if (DEBUG) console.error('<<', String(m.data));
    });
    this.addEventListener('close', (e) => {
      frames.push({ close: e.code, reason: e.reason });
      if (DEBUG) console.error('-- close', e.code, e.reason);
    });
  }
  send(data) {
    frames.push({ out: String(data) });
    if (DEBUG) console.error('>>', String(data));
    super.send(data);
  }
};

const { Amplify } = await import('aws-amplify');
const { events } = await import('aws-amplify/data');
if (DEBUG) {
  const { ConsoleLogger } = await import('aws-amplify/utils');
  ConsoleLogger.LOG_LEVEL = 'DEBUG';
}

function configure(apiKey) {
  Amplify.configure({
    API: {
      Events: {
        endpoint: `${opt.base.replace(/\/$/, '')}/event`,
        region: 'us-east-1',
        defaultAuthMode: 'apiKey',
        apiKey,
      },
    },
  });
}

function pick(obj, path) {
  return path.split('.').reduce((v, k) => (v === null || v === undefined ? undefined : v[k]), obj);
}

function matches(event, where) {
  return Object.entries(where).every(([path, want]) => JSON.stringify(pick(event, path)) === JSON.stringify(want));
}

// Subscribe through Amplify and wait for subscribe_success (`sub.ready`, aws-amplify >= 6.22).
// Returns {channel, sub, received, waitFor(pred, n)}.
async function subscribed(path, subOptions) {
  const channel = await events.connect(path);
  const received = [];
  const waiters = [];
  let failure = null;
  const check = () => {
    for (const w of [...waiters]) {
      const hits = received.filter(w.pred);
      if (hits.length >= w.n) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(hits);
      } else if (failure) {
        waiters.splice(waiters.indexOf(w), 1);
        w.reject(failure);
      }
    }
  };
  const sub = channel.subscribe(
    {
      next: (data) => {
        received.push(data.event);
        check();
      },
      error: (err) => {
        failure = new Error(`observer.error: ${JSON.stringify(describe(err))}`);
        check();
      },
    },
    subOptions,
  );
  if (sub.ready) await sub.ready;
  const waitFor = (pred, n = 1) =>
    new Promise((resolve, reject) => {
      waiters.push({ pred, n, resolve, reject });
      check();
    });
  return { channel, sub, received, waitFor };
}

async function attempt(fn) {
  try {
    const value = await fn();
    return { rejected: false, value: value ?? null };
  } catch (err) {
    return { rejected: true, error: describe(err) };
  }
}

const scenarios = {
  async subscribe() {
    configure(opt.key);
    const where = JSON.parse(opt.where);
    const { received, waitFor } = await subscribed('/trading/*');
    line({ ready: true });
    const hits = await waitFor((ev) => matches(ev, where), Number(opt.count));
    return { matched: hits[0], matches: hits, events: received };
  },

  async 'publish-ws'() {
    configure(opt.key);
    const stamp = Date.now();
    const { waitFor } = await subscribed('/custom/*');
    const pub = await events.connect(opt.channel);
    const single = { kind: 'single', stamp, text: 'hello over ws' };
    const batch = [
      { kind: 'batch', stamp, n: 1 },
      { kind: 'batch', stamp, n: 2 },
    ];
    const results = [await pub.publish(single), await pub.publish(batch)];
    const got = await waitFor((ev) => ev?.stamp === stamp, 3);
    return { published: [single, ...batch], publishResults: results, received: got };
  },

  async 'post-http'() {
    configure(opt.key);
    const stamp = Date.now();
    const { waitFor } = await subscribed('/custom/*');
    const sent = [
      { kind: 'note', stamp, n: 1, text: 'first' },
      { kind: 'note', stamp, n: 2, text: 'second' },
    ];
    const failed = await events.post(opt.channel, sent);
    const got = await waitFor((ev) => ev?.stamp === stamp, sent.length);
    return { posted: sent, postResult: failed ?? null, received: got };
  },

  async 'publish-read-key'() {
    configure(opt.key);
    const channel = await events.connect(opt.channel);
    const ws = await attempt(() => channel.publish({ kind: 'forbidden', via: 'ws' }));
    const http = await attempt(() => events.post(opt.channel, { kind: 'forbidden', via: 'http' }));
    return { ws, http };
  },

  async 'bad-key-subscribe'() {
    // 1. The whole connection with a wrong key: Amplify connects eagerly in events.connect().
    configure(opt['bad-key']);
    const connect = await attempt(async () => {
      const channel = await events.connect('/trading/*');
      const sub = channel.subscribe({ next: () => {}, error: () => {} });
      await sub.ready;
      return 'subscribed';
    });
    await events.closeAll().catch(() => {});
    // 2. A good connection, a wrong key on the subscribe message only (subscribe_error).
    let subscribe = null;
    if (opt.key) {
      configure(opt.key);
      let observerError = null;
      subscribe = await attempt(async () => {
        const channel = await events.connect('/trading/*');
        const sub = channel.subscribe(
          {
            next: () => {},
            error: (err) => {
              observerError = describe(err);
            },
          },
          { apiKey: opt['bad-key'] },
        );
        await sub.ready;
        return 'subscribed';
      });
      await new Promise((r) => setTimeout(r, 50));
      subscribe.observerError = observerError;
    }
    return { connect, subscribe };
  },
};

const run = scenarios[scenario];
if (!run) {
  fail(`unknown scenario ${JSON.stringify(scenario)}; one of ${Object.keys(scenarios).join(', ')}`);
} else {
  try {
    finish(0, await run());
  } catch (err) {
    fail(err);
  }
}
