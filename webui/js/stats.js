// Polls GET /api/v1/stats and keeps a short history, from which the pages
// draw rates (deltas of the cumulative counters) and latency percentiles.
// Every key of the stats document is optional: what is missing shows as "–".

import { fetchStats } from "./api.js";
import { isNum } from "./dom.js";

/** Sum of a counter that is a number or an object of numbers (errors by kind). */
export function countOf(value) {
  if (isNum(value)) return value;
  if (value && typeof value === "object") {
    let total = 0;
    let any = false;
    for (const v of Object.values(value)) {
      const n = countOf(v);
      if (isNum(n)) {
        total += n;
        any = true;
      }
    }
    return any ? total : undefined;
  }
  return undefined;
}

function sumOver(items, pick) {
  let total = 0;
  let any = false;
  for (const item of items) {
    const n = pick(item);
    if (isNum(n)) {
      total += n;
      any = true;
    }
  }
  return any ? total : undefined;
}

/** Histogram buckets as sorted [upperBoundMs, countInBucket] pairs, or null. */
export function normaliseBuckets(buckets, count) {
  const bound = (le) => (typeof le === "string" && /^\+?inf/i.test(le) ? Infinity : Number(le));
  let pairs = [];
  if (Array.isArray(buckets)) {
    for (const b of buckets) {
      if (Array.isArray(b) && b.length >= 2) pairs.push([bound(b[0]), Number(b[1])]);
      else if (b && typeof b === "object") pairs.push([bound(b.le ?? b.upper ?? b.max), Number(b.count ?? b.n)]);
    }
  } else if (buckets && typeof buckets === "object") {
    pairs = Object.entries(buckets).map(([le, n]) => [bound(le), Number(n)]);
  } else {
    return null;
  }
  pairs = pairs.filter(([le, n]) => !Number.isNaN(le) && isNum(n)).sort((a, b) => a[0] - b[0]);
  if (!pairs.length) return null;
  // Cumulative (Prometheus style) when the counts never decrease and the
  // last one is the total: turn them into per-bucket counts.
  const monotonic = pairs.every((p, i) => i === 0 || p[1] >= pairs[i - 1][1]);
  if (monotonic && isNum(count) && pairs[pairs.length - 1][1] === count && pairs.length > 1) {
    return pairs.map(([le, n], i) => [le, i ? n - pairs[i - 1][1] : n]);
  }
  return pairs;
}

/** The q-quantile (0..1) of per-bucket counts, interpolated within the bucket. */
export function quantile(pairs, q) {
  const total = pairs.reduce((s, p) => s + p[1], 0);
  if (total <= 0) return undefined;
  const rank = q * total;
  let seen = 0;
  let lower = 0;
  for (const [le, n] of pairs) {
    if (n > 0 && seen + n >= rank) {
      if (!Number.isFinite(le)) return lower;
      return lower + ((rank - seen) / n) * (le - lower);
    }
    seen += n;
    if (Number.isFinite(le)) lower = le;
  }
  return lower;
}

function bucketDelta(cur, prev) {
  if (!cur) return null;
  if (!prev) return cur;
  const before = new Map(prev);
  const out = cur.map(([le, n]) => [le, n - (before.get(le) || 0)]);
  return out.some(([, n]) => n < 0) ? null : out;
}

/** Latency of one stats entry: {count, sumMs, p50, p99, buckets}. */
function latencyOf(entry) {
  const lat = entry && typeof entry.latency === "object" && entry.latency ? entry.latency : {};
  return {
    count: isNum(lat.count) ? lat.count : undefined,
    sumMs: isNum(lat.sumMs) ? lat.sumMs : undefined,
    p50: isNum(lat.p50) ? lat.p50 : undefined,
    p99: isNum(lat.p99) ? lat.p99 : undefined,
    buckets: normaliseBuckets(lat.buckets, lat.count),
  };
}

/** Merge the latency of several entries (the per-API ones into a total). */
function mergeLatency(lats) {
  const withCount = lats.filter((l) => isNum(l.count) && l.count > 0);
  const count = sumOver(lats, (l) => l.count);
  const sumMs = sumOver(lats, (l) => l.sumMs);
  let buckets = null;
  if (lats.length && lats.every((l) => l.buckets)) {
    const merged = new Map();
    for (const l of lats) for (const [le, n] of l.buckets) merged.set(le, (merged.get(le) || 0) + n);
    buckets = [...merged.entries()].sort((a, b) => a[0] - b[0]);
  }
  // Without buckets: the count-weighted p50 and the worst p99 are the best
  // summary the per-API figures allow.
  const weight = withCount.reduce((s, l) => s + l.count, 0);
  const p50 = weight ? withCount.reduce((s, l) => s + (isNum(l.p50) ? l.p50 * l.count : 0), 0) / weight : undefined;
  const p99s = withCount.map((l) => l.p99).filter(isNum);
  return { count, sumMs, p50, p99: p99s.length ? Math.max(...p99s) : undefined, buckets };
}

/** Cumulative figures of one stats entry (totals, an API or a server). */
function figures(entry) {
  return {
    requests: isNum(entry?.requests) ? entry.requests : undefined,
    errors: countOf(entry?.errors),
    rejects: countOf(entry?.rejects),
    latency: latencyOf(entry),
  };
}

/** Cumulative figures of a whole stats document. */
export function totalsOf(data) {
  const apis = Object.values(data?.apis || {});
  const servers = Object.values(data?.servers || {});
  const t = data?.totals || {};
  const apiLat = apis.map(latencyOf);
  const latency = t.latency ? latencyOf(t) : mergeLatency(apiLat);
  const requests = isNum(t.requests)
    ? t.requests
    : (sumOver(apis, (a) => a.requests) ?? sumOver(servers, (s) => s.requests));
  return {
    requests,
    errors: countOf(t.errors) ?? sumOver(apis, (a) => countOf(a.errors)),
    rejects: countOf(t.rejects) ?? sumOver(apis, (a) => countOf(a.rejects)),
    latency,
  };
}

function nonNegative(x) {
  return isNum(x) && x >= 0 ? x : undefined;
}

/** Rates and interval latency between two snapshots of the same counters. */
export function rates(cur, prev, dt) {
  const out = { rps: undefined, errorsPs: undefined, rejectsPs: undefined, errorRate: undefined };
  out.p50 = cur.latency.p50;
  out.p99 = cur.latency.p99;
  out.meanMs = undefined;
  if (!prev || !(dt > 0)) return out;
  const dReq = nonNegative(cur.requests - prev.requests);
  const dErr = nonNegative(cur.errors - prev.errors);
  const dRej = nonNegative(cur.rejects - prev.rejects);
  if (isNum(dReq)) out.rps = dReq / dt;
  if (isNum(dErr)) out.errorsPs = dErr / dt;
  if (isNum(dRej)) out.rejectsPs = dRej / dt;
  if (isNum(dReq) && isNum(dErr)) out.errorRate = dReq > 0 ? Math.min(100, (dErr * 100) / dReq) : 0;
  const dCount = nonNegative(cur.latency.count - prev.latency.count);
  const dSum = nonNegative(cur.latency.sumMs - prev.latency.sumMs);
  if (dCount > 0 && isNum(dSum)) out.meanMs = dSum / dCount;
  const delta = bucketDelta(cur.latency.buckets, prev.latency.buckets);
  if (delta && delta.some(([, n]) => n > 0)) {
    out.p50 = quantile(delta, 0.5);
    out.p99 = quantile(delta, 0.99);
  } else if (isNum(dCount) && dCount === 0) {
    // Nothing finished in the interval: no latency to show for it.
    out.p50 = undefined;
    out.p99 = undefined;
  }
  return out;
}

/**
 * One poll, with what the charts need: `t` (seconds), the raw `data`, and
 * per-interval `total`, `apis[name]`, `servers[name]` rates.
 */
function derive(data, t, prev) {
  const dt = prev ? t - prev.t : 0;
  const cum = { total: totalsOf(data), apis: {}, servers: {} };
  for (const [name, entry] of Object.entries(data?.apis || {})) cum.apis[name] = figures(entry);
  for (const [name, entry] of Object.entries(data?.servers || {})) cum.servers[name] = figures(entry);
  const sample = { t, data, cum, total: rates(cum.total, prev?.cum.total, dt), apis: {}, servers: {} };
  for (const [name, c] of Object.entries(cum.apis)) sample.apis[name] = rates(c, prev?.cum.apis[name], dt);
  for (const [name, c] of Object.entries(cum.servers)) {
    const r = rates(c, prev?.cum.servers[name], dt);
    const ewma = data.servers[name]?.latencyEWMA;
    r.ewmaMs = isNum(ewma) && ewma > 0 ? ewma * 1000 : undefined;
    r.active = data.servers[name]?.active;
    sample.servers[name] = r;
  }
  return sample;
}

/** Polls the stats every `interval` ms and notifies subscribers. */
export class StatsPoller {
  constructor({ interval = 2000, capacity = 180, fetcher = fetchStats } = {}) {
    this.interval = interval;
    this.capacity = capacity;
    this.fetcher = fetcher;
    this.samples = [];
    this.error = null;
    this.listeners = new Set();
    this.timer = null;
    this.running = false;
  }

  get latest() {
    return this.samples.length ? this.samples[this.samples.length - 1] : null;
  }

  /** Call fn(poller) after each poll (and at once if there is data); returns an unsubscribe function. */
  subscribe(fn) {
    this.listeners.add(fn);
    if (this.latest || this.error) fn(this);
    return () => this.listeners.delete(fn);
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.poll();
  }

  stop() {
    this.running = false;
    clearTimeout(this.timer);
    this.timer = null;
  }

  reset() {
    this.stop();
    this.samples = [];
    this.error = null;
  }

  /** Poll now (the timer keeps its pace). */
  async poll() {
    clearTimeout(this.timer);
    try {
      const data = await this.fetcher();
      if (!this.running) return;
      const t = isNum(data?.at) ? data.at : Date.now() / 1000;
      const prev = this.latest;
      // A restarted gateway resets its counters: start the history again.
      if (prev && t <= prev.t) this.samples = [];
      this.samples.push(derive(data || {}, t, this.latest));
      if (this.samples.length > this.capacity) this.samples.shift();
      this.error = null;
    } catch (e) {
      if (!this.running) return;
      this.error = e;
      if (e.status === 401) {
        this.stop();
        return;
      }
    }
    for (const fn of [...this.listeners]) {
      try {
        fn(this);
      } catch (e) {
        console.error(e);
      }
    }
    if (this.running) this.timer = setTimeout(() => this.poll(), this.interval);
  }
}

/** The one poller of the app. */
export const poller = new StatsPoller();
