// Time-series line charts on <canvas>: a few series over the polling
// history, nice y ticks, relative time on x, and a hover read-out.

import { h, isNum, DASH } from "./dom.js";

function css(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

/**
 * The y axis for values up to `max`: a step of 1, 2, 2.5 or 5 times a power
 * of ten giving at most four intervals, and the top tick.
 */
export function niceScale(max) {
  if (!(max > 0)) return { step: 0.25, top: 1 };
  const raw = max / 4;
  const base = 10 ** Math.floor(Math.log10(raw));
  let step = 10 * base;
  for (const m of [1, 2, 2.5, 5]) {
    if (m * base >= raw) {
      step = m * base;
      break;
    }
  }
  return { step, top: Math.ceil(max / step - 1e-9) * step };
}

export class LineChart {
  /**
   * @param {object} options
   * @param {string} options.title the chart's accessible name.
   * @param {Array<{key: string, label: string, color: string}>} options.series
   * @param {(v: number) => string} options.format formats values (axis, legend, tooltip).
   * @param {number} options.height in CSS pixels.
   * @param {number} options.span the seconds shown at least (then the whole history).
   */
  constructor({ title, series, format = (v) => String(v), height = 170, span = 30, yMax }) {
    this.title = title;
    this.series = series;
    this.format = format;
    this.height = height;
    this.span = span;
    this.yMax = yMax;
    this.points = [];
    this.hover = null;
    this.canvas = h("canvas", { role: "img", "aria-label": title, height });
    this.tooltip = h("div", { class: "chart-tooltip", hidden: true });
    this.legendValues = {};
    this.legend = h(
      "ul",
      { class: "chart-legend" },
      series.map((s) => {
        const value = h("span", { class: "legend-value" }, DASH);
        this.legendValues[s.key] = value;
        const swatch = h("span", { class: "swatch" });
        swatch.style.background = s.color;
        return h("li", null, swatch, h("span", null, s.label), value);
      }),
    );
    this.el = h(
      "figure",
      { class: "chart" },
      h("figcaption", { class: "chart-title" }, title),
      this.legend,
      h("div", { class: "chart-canvas" }, this.canvas, this.tooltip),
    );
    this.canvas.addEventListener("mousemove", (e) => this.onMove(e));
    this.canvas.addEventListener("mouseleave", () => {
      this.hover = null;
      this.tooltip.hidden = true;
      this.draw();
    });
    this.resizeObserver = new ResizeObserver(() => this.draw());
    this.resizeObserver.observe(this.el);
  }

  /** @param {Array<object>} points each {t: seconds, [series key]: value or undefined} */
  update(points) {
    this.points = points;
    const last = points[points.length - 1];
    const parts = [];
    for (const s of this.series) {
      const v = last ? last[s.key] : undefined;
      const text = isNum(v) ? this.format(v) : DASH;
      this.legendValues[s.key].textContent = text;
      parts.push(`${s.label} ${text}`);
    }
    this.canvas.setAttribute("aria-label", `${this.title}: ${parts.join(", ")}`);
    this.draw();
  }

  destroy() {
    this.resizeObserver.disconnect();
  }

  geometry() {
    const width = this.canvas.parentElement ? this.canvas.parentElement.clientWidth : 300;
    const pad = { left: 56, right: 12, top: 10, bottom: 22 };
    const last = this.points.length ? this.points[this.points.length - 1].t : 0;
    const first = this.points.length ? this.points[0].t : 0;
    // The whole history, at least `span` seconds: a chart fills up as the
    // polling goes on instead of showing a sliver at its right edge.
    const t1 = last;
    const t0 = Math.min(first, last - this.span);
    let max = 0;
    for (const p of this.points) for (const s of this.series) if (isNum(p[s.key])) max = Math.max(max, p[s.key]);
    const { step, top } = niceScale(this.yMax !== undefined ? Math.max(this.yMax, max) : max);
    return { width, height: this.height, pad, t0, t1, yMax: top, yStep: step };
  }

  draw() {
    const g = this.geometry();
    if (g.width <= 0) return;
    const dpr = window.devicePixelRatio || 1;
    const canvas = this.canvas;
    if (canvas.width !== Math.round(g.width * dpr) || canvas.height !== Math.round(g.height * dpr)) {
      canvas.width = Math.round(g.width * dpr);
      canvas.height = Math.round(g.height * dpr);
      canvas.style.width = `${g.width}px`;
      canvas.style.height = `${g.height}px`;
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, g.width, g.height);
    const { pad } = g;
    const plotW = g.width - pad.left - pad.right;
    const plotH = g.height - pad.top - pad.bottom;
    const x = (t) => pad.left + ((t - g.t0) / Math.max(1e-9, g.t1 - g.t0)) * plotW;
    const y = (v) => pad.top + plotH - (v / g.yMax) * plotH;
    const grid = css("--chart-grid", "#e5e7eb");
    const muted = css("--text-muted", "#6b7280");
    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;

    // Horizontal grid and y labels.
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    const ticks = Math.round(g.yMax / g.yStep);
    for (let i = 0; i <= ticks; i++) {
      const v = i * g.yStep;
      const yy = Math.round(y(v)) + 0.5;
      ctx.strokeStyle = grid;
      ctx.beginPath();
      ctx.moveTo(pad.left, yy);
      ctx.lineTo(pad.left + plotW, yy);
      ctx.stroke();
      ctx.fillStyle = muted;
      ctx.fillText(this.format(v), pad.left - 6, yy);
    }
    // Relative time labels on x.
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const span = g.t1 - g.t0;
    const step = span > 600 ? 300 : span > 240 ? 60 : span > 100 ? 30 : span > 45 ? 15 : 10;
    for (let s = 0; s <= span; s += step) {
      const xx = x(g.t1 - s);
      if (xx < pad.left + 10) break;
      ctx.fillStyle = muted;
      ctx.fillText(s === 0 ? "now" : `-${s}s`, xx, pad.top + plotH + 6);
    }

    if (this.points.length < 2) {
      ctx.fillStyle = muted;
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText("collecting data\u2026", pad.left + plotW / 2, pad.top + plotH / 2);
      return;
    }

    for (const s of this.series) {
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2;
      ctx.lineJoin = "round";
      ctx.beginPath();
      let drawing = false;
      const lonely = [];
      this.points.forEach((p, i) => {
        const v = p[s.key];
        if (!isNum(v)) {
          drawing = false;
          return;
        }
        if (drawing) ctx.lineTo(x(p.t), y(v));
        else ctx.moveTo(x(p.t), y(v));
        if (!drawing && !isNum(this.points[i + 1]?.[s.key])) lonely.push([x(p.t), y(v)]);
        drawing = true;
      });
      ctx.stroke();
      // A value between two gaps has no line: show it as a dot.
      ctx.fillStyle = s.color;
      for (const [px, py] of lonely) {
        ctx.beginPath();
        ctx.arc(px, py, 2.5, 0, Math.PI * 2);
        ctx.fill();
      }
      if (s.fill) {
        // A light area under the first series reads better at a glance.
        ctx.globalAlpha = 0.12;
        ctx.fillStyle = s.color;
        let started = false;
        ctx.beginPath();
        let lastX = 0;
        for (const p of this.points) {
          const v = p[s.key];
          if (!isNum(v)) continue;
          if (!started) {
            ctx.moveTo(x(p.t), y(0));
            started = true;
          }
          ctx.lineTo(x(p.t), y(v));
          lastX = x(p.t);
        }
        if (started) {
          ctx.lineTo(lastX, y(0));
          ctx.closePath();
          ctx.fill();
        }
        ctx.globalAlpha = 1;
      }
    }

    if (this.hover !== null && this.points[this.hover]) {
      const p = this.points[this.hover];
      const xx = Math.round(x(p.t)) + 0.5;
      ctx.strokeStyle = muted;
      ctx.lineWidth = 1;
      ctx.setLineDash([3, 3]);
      ctx.beginPath();
      ctx.moveTo(xx, pad.top);
      ctx.lineTo(xx, pad.top + plotH);
      ctx.stroke();
      ctx.setLineDash([]);
      for (const s of this.series) {
        const v = p[s.key];
        if (!isNum(v)) continue;
        ctx.fillStyle = s.color;
        ctx.beginPath();
        ctx.arc(xx, y(v), 3, 0, Math.PI * 2);
        ctx.fill();
      }
    }
  }

  onMove(event) {
    if (this.points.length < 2) return;
    const g = this.geometry();
    const rect = this.canvas.getBoundingClientRect();
    const px = event.clientX - rect.left;
    const t = g.t0 + ((px - g.pad.left) / (g.width - g.pad.left - g.pad.right)) * (g.t1 - g.t0);
    let best = 0;
    for (let i = 1; i < this.points.length; i++) {
      if (Math.abs(this.points[i].t - t) < Math.abs(this.points[best].t - t)) best = i;
    }
    this.hover = best;
    const p = this.points[best];
    const ago = Math.round(g.t1 - p.t);
    this.tooltip.replaceChildren(
      h("div", { class: "tooltip-time" }, ago ? `${ago} s ago` : "now"),
      ...this.series.map((s) => {
        const swatch = h("span", { class: "swatch" });
        swatch.style.background = s.color;
        return h("div", null, swatch, `${s.label}: `, h("strong", null, isNum(p[s.key]) ? this.format(p[s.key]) : DASH));
      }),
    );
    this.tooltip.hidden = false;
    const left = Math.min(px + 12, g.width - 150);
    this.tooltip.style.left = `${Math.max(0, left)}px`;
    this.tooltip.style.top = "8px";
    this.draw();
  }
}

/** The series colours, also used by legends elsewhere. */
export const COLORS = {
  blue: "#2563eb",
  red: "#dc2626",
  amber: "#d97706",
  green: "#16a34a",
  violet: "#7c3aed",
  teal: "#0d9488",
};
