// A small hand-written canvas line chart and sparkline (no library).
//
// Canvases are sized from their CSS box times devicePixelRatio, so lines
// stay sharp on high-density screens. Long series are decimated to a
// min/max pair per pixel column before drawing; `data-points` on the canvas
// always says how many points were actually drawn.

import { formatAxis, formatClock } from "./format.js";

let theme = null;

/** Colours come from CSS custom properties, so the stylesheet owns them. */
function colours() {
  if (!theme) {
    const css = getComputedStyle(document.documentElement);
    const read = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
    theme = {
      line: read("--chart-line", "#0b5cad"),
      fill: read("--chart-fill", "rgba(11,92,173,0.12)"),
      grid: read("--chart-grid", "#d5dbe3"),
      text: read("--chart-text", "#3d4754"),
      font: read("--chart-font", "12px system-ui, sans-serif"),
    };
  }
  return theme;
}

if (typeof matchMedia === "function") {
  matchMedia("(prefers-color-scheme: dark)").addEventListener?.("change", () => {
    theme = null;
  });
}

/** Sizes the backing store to the CSS box × DPR; returns the context in CSS pixels. */
function prepare(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(canvas.clientWidth));
  const height = Math.max(1, Math.round(canvas.clientHeight));
  const pw = Math.round(width * dpr);
  const ph = Math.round(height * dpr);
  if (canvas.width !== pw) canvas.width = pw;
  if (canvas.height !== ph) canvas.height = ph;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  return { ctx, width, height };
}

/**
 * At most two points (min and max, in time order) per pixel column when the
 * series is longer than the plot is wide.
 * @param {Array<[number, number]>} points sorted by time
 */
export function decimate(points, from, to, columns) {
  if (points.length <= columns * 2 || to <= from) return points;
  const out = [];
  const span = to - from;
  let column = -1;
  let lo = null;
  let hi = null;
  const flush = () => {
    if (lo === null) return;
    if (lo === hi) out.push(lo);
    else if (lo[0] <= hi[0]) out.push(lo, hi);
    else out.push(hi, lo);
  };
  for (const p of points) {
    const c = Math.floor(((p[0] - from) / span) * columns);
    if (c !== column) {
      flush();
      column = c;
      lo = p;
      hi = p;
    } else {
      if (p[1] < lo[1]) lo = p;
      if (p[1] > hi[1]) hi = p;
    }
  }
  flush();
  return out;
}

function range(points) {
  let min = Infinity;
  let max = -Infinity;
  for (const [, v] of points) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  if (min === max) {
    const pad = min === 0 ? 1 : Math.abs(min) * 0.1;
    return [min - pad, max + pad];
  }
  const pad = (max - min) * 0.08;
  return [min - pad, max + pad];
}

function tracePath(ctx, points, x, y) {
  ctx.beginPath();
  points.forEach((p, i) => {
    if (i === 0) ctx.moveTo(x(p[0]), y(p[1]));
    else ctx.lineTo(x(p[0]), y(p[1]));
  });
}

/**
 * A sparkline of `points` ([t, v], oldest first) across the whole canvas.
 * @returns {number} points drawn
 */
export function drawSparkline(canvas, points) {
  const { ctx, width, height } = prepare(canvas);
  const c = colours();
  const from = points.length ? points[0][0] : 0;
  const to = points.length ? points[points.length - 1][0] : 1;
  const drawn = decimate(points, from, to, width);
  canvas.setAttribute("data-points", String(drawn.length));
  if (!drawn.length) return 0;
  const [min, max] = range(drawn);
  const pad = 2;
  const x = (t) => (to === from ? width / 2 : pad + ((t - from) / (to - from)) * (width - 2 * pad));
  const y = (v) => height - pad - ((v - min) / (max - min)) * (height - 2 * pad);
  ctx.lineWidth = 1.5;
  ctx.strokeStyle = c.line;
  ctx.lineJoin = "round";
  if (drawn.length === 1) {
    ctx.fillStyle = c.line;
    ctx.beginPath();
    ctx.arc(x(drawn[0][0]), y(drawn[0][1]), 2, 0, Math.PI * 2);
    ctx.fill();
    return 1;
  }
  tracePath(ctx, drawn, x, y);
  ctx.stroke();
  return drawn.length;
}

/**
 * A line chart of `points` ([t, v], oldest first) over the time window
 * [fromMs, toMs], with a value axis and the window's start and end times.
 * @returns {number} points drawn
 */
export function drawChart(canvas, points, fromMs, toMs) {
  const { ctx, width, height } = prepare(canvas);
  const c = colours();
  const left = 48;
  const right = 8;
  const top = 8;
  const bottom = 20;
  const plotW = Math.max(1, width - left - right);
  const plotH = Math.max(1, height - top - bottom);
  const inWindow = points.filter((p) => p[0] >= fromMs && p[0] <= toMs);
  const drawn = decimate(inWindow, fromMs, toMs, plotW);
  canvas.setAttribute("data-points", String(drawn.length));

  ctx.font = c.font;
  ctx.fillStyle = c.text;
  ctx.strokeStyle = c.grid;
  ctx.lineWidth = 1;
  const [min, max] = drawn.length ? range(drawn) : [0, 1];
  const x = (t) => left + ((t - fromMs) / Math.max(1, toMs - fromMs)) * plotW;
  const y = (v) => top + plotH - ((v - min) / (max - min)) * plotH;

  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  const ticks = 4;
  for (let i = 0; i <= ticks; i++) {
    const v = min + ((max - min) * i) / ticks;
    const py = Math.round(y(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(left, py);
    ctx.lineTo(left + plotW, py);
    ctx.stroke();
    if (drawn.length) ctx.fillText(formatAxis(v, (max - min) / ticks), left - 6, py);
  }
  ctx.textBaseline = "alphabetic";
  ctx.textAlign = "left";
  ctx.fillText(formatClock(fromMs), left, height - 4);
  ctx.textAlign = "right";
  ctx.fillText(formatClock(toMs), left + plotW, height - 4);

  if (!drawn.length) {
    ctx.textAlign = "center";
    ctx.fillText("no readings in this window", left + plotW / 2, top + plotH / 2);
    return 0;
  }
  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top, plotW, plotH);
  ctx.clip();
  if (drawn.length > 1) {
    tracePath(ctx, drawn, x, y);
    ctx.lineTo(x(drawn[drawn.length - 1][0]), top + plotH);
    ctx.lineTo(x(drawn[0][0]), top + plotH);
    ctx.closePath();
    ctx.fillStyle = c.fill;
    ctx.fill();
    tracePath(ctx, drawn, x, y);
    ctx.strokeStyle = c.line;
    ctx.lineWidth = 1.75;
    ctx.lineJoin = "round";
    ctx.stroke();
  }
  ctx.fillStyle = c.line;
  const last = drawn[drawn.length - 1];
  ctx.beginPath();
  ctx.arc(x(last[0]), y(last[1]), 2.5, 0, Math.PI * 2);
  ctx.fill();
  ctx.restore();
  return drawn.length;
}
