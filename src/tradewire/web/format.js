// Pure formatting and classification helpers. Formatters are built once: Intl objects are costly to create.

const money2 = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
// Lots: two decimals at least (0.10, 1.00), three when the volume has them (EAs trade steps of 0.001 lot).
const vol = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 3 });
const int0 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const DASH = '—';

export function money(n) {
  return n === null || n === undefined || Number.isNaN(n) ? DASH : money2.format(n);
}

export function signedMoney(n) {
  if (n === null || n === undefined) return DASH;
  return (n > 0 ? '+' : '') + money2.format(n);
}

export function volume(n) {
  return n === null || n === undefined ? DASH : vol.format(n);
}

export function signedVolume(n) {
  if (n === null || n === undefined) return DASH;
  return (n > 0 ? '+' : '') + vol.format(n);
}

export function integer(n) {
  return n === null || n === undefined ? DASH : int0.format(n);
}

export function percent(n) {
  return n === null || n === undefined ? DASH : `${money2.format(n)}%`;
}

/** Decimal places a price was quoted with (1.08512 -> 5), capped: the symbol's digits, learned from ticks. */
export function decimalsOf(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return 0;
  const text = String(n);
  const dot = text.indexOf('.');
  return dot < 0 || text.includes('e') ? 0 : Math.min(6, text.length - dot - 1);
}

export function price(n, digits) {
  if (n === null || n === undefined || n === 0) return DASH;
  return n.toFixed(digits ?? Math.max(2, decimalsOf(n)));
}

export function signClass(n) {
  return n > 0 ? 'pos' : n < 0 ? 'neg' : '';
}

/** A duration in ms as a short age: 0.4s, 12s, 3m, 2h, 5d. */
export function age(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return DASH;
  const s = Math.max(0, ms) / 1000;
  if (s < 10) return `${s.toFixed(1)}s`;
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

export function ageClass(ms) {
  if (ms === null || ms === undefined) return '';
  return ms > 60_000 ? 'old' : ms > 10_000 ? 'aging' : '';
}

function pad(n, width = 2) {
  return String(n).padStart(width, '0');
}

/** Times are shown in UTC, as the hub and brokers' logs keep them. */
export function timeUTC(ms) {
  if (!ms) return DASH;
  const d = new Date(ms);
  return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
}

export function dateTimeUTC(ms) {
  if (!ms) return DASH;
  const d = new Date(ms);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${timeUTC(ms)}`;
}

/** `<input type=datetime-local>` value (read as UTC) to epoch ms, or null. */
export function parseUTCInput(value) {
  if (!value) return null;
  const ms = Date.parse(`${value}Z`);
  return Number.isNaN(ms) ? null : ms;
}

const DEFAULT_MARGIN_CALL = 100;
const DEFAULT_STOP_OUT = 50;
const NEAR_FACTOR = 1.5; // within 50 % above the margin-call level: worth a look before the alert fires

/**
 * How close an account is to its broker's limits, compared as the hub's alert rules do: the margin level in
 * percent mode; in money mode equity (MT5) or free margin (MT4) against levels in money.
 * Returns {risk: none|ok|near|call|stopout, value, unit, call, stop}.
 */
export function marginRisk(state, platform) {
  if (!state) return { risk: 'none', value: null, unit: '%', call: null, stop: null };
  const money = state.marginMode === 'money';
  let value;
  if (money) value = state.margin > 0 ? (platform === 'MT4' ? state.freeMargin : state.equity) : null;
  else value = state.marginLevel;
  const call = state.marginCallLevel ?? (money ? null : DEFAULT_MARGIN_CALL);
  const stop = state.stopOutLevel ?? (money ? null : DEFAULT_STOP_OUT);
  const unit = money ? '' : '%';
  if (value === null || value === undefined) return { risk: 'none', value: null, unit, call, stop };
  let risk = 'ok';
  if (stop !== null && value <= stop) risk = 'stopout';
  else if (call !== null && value <= call) risk = 'call';
  else if (call !== null && value <= call * NEAR_FACTOR) risk = 'near';
  return { risk, value, unit, call, stop };
}

export function accountLabel(info) {
  return info ? `${info.login}@${info.server}` : DASH;
}

export { DASH };
