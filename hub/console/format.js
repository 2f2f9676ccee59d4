// How values and times read on screen.

/** A reading or command value as text: numbers trimmed, booleans as words. */
export function formatValue(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "boolean") return value ? "true" : "false";
  if (typeof value === "number") {
    if (!Number.isFinite(value)) return String(value);
    if (Number.isInteger(value)) return String(value);
    const abs = Math.abs(value);
    const digits = abs >= 100 ? 1 : abs >= 1 ? 2 : 3;
    return String(Number(value.toFixed(digits)));
  }
  return String(value);
}

/** A number for the chart axis, with enough decimals to tell ticks `step` apart. */
export function formatAxis(value, step = 0) {
  const abs = Math.abs(value);
  if (abs >= 1e6 || (abs > 0 && abs < 1e-4)) return value.toExponential(1);
  const decimals = step > 0 ? Math.min(6, Math.max(0, Math.ceil(-Math.log10(step)))) : abs >= 100 ? 0 : 2;
  return value.toFixed(decimals);
}

/** "12 s ago", "4 min ago", "3 h ago", "2 d ago", or "never". */
export function formatAgo(ms, now = Date.now()) {
  if (ms === null || ms === undefined) return "never";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** Local wall-clock time, to the second. */
export function formatClock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** Local date and time for tooltips and the commands list. */
export function formatDateTime(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "";
  return new Date(ms).toLocaleString();
}

/** A rate with one decimal. */
export function formatRate(x) {
  return typeof x === "number" && Number.isFinite(x) ? x.toFixed(1) : "0.0";
}

/** Milliseconds from an RFC 3339 string, or null. */
export function parseTime(text) {
  if (!text) return null;
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? null : ms;
}
