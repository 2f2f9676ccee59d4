// The hub at a glance (#/overview): connected devices, ingest rate and
// commands by status, from the stream's "stats" messages (one a second);
// GET /status fills the page before the first one arrives.

import { el, setText, clear, frameBatcher } from "./dom.js";
import { drawChart } from "./chart.js";
import { formatRate } from "./format.js";

const STATUSES = ["queued", "sent", "delivered", "succeeded", "failed", "rejected", "expired"];

/**
 * Shows the overview in `container`.
 * @returns {() => void} unmount
 */
export function mountOverview(container, { api, store }) {
  let alive = true;
  const connected = el("span", { class: "stat-value", "data-testid": "overview-connected", text: "—" });
  const rate = el("span", { class: "stat-value", "data-testid": "overview-rate", text: "—" });
  const frames = el("span", { class: "stat-value", text: "—" });
  const counts = new Map();
  const commands = el(
    "dl",
    { class: "command-counts", "data-testid": "overview-commands" },
    STATUSES.flatMap((status) => {
      const value = el("dd", { "data-status": status, text: "0" });
      counts.set(status, value);
      return [el("div", { class: "command-count" }, [el("dt", { text: status }), value])];
    }),
  );
  const canvas = el("canvas", { class: "chart", "data-testid": "overview-chart", "data-points": "0", role: "img", "aria-label": "Readings per second, up to the last ten minutes" });
  const updated = el("p", { class: "muted", text: "Waiting for the hub's figures…" });

  container.append(
    el("section", { class: "overview", "aria-labelledby": "overview-h" }, [
      el("h1", { id: "overview-h", class: "view-title", text: "Hub overview" }),
      el("div", { class: "stats" }, [
        el("div", { class: "stat" }, [el("span", { class: "stat-label", text: "Connected devices" }), connected]),
        el("div", { class: "stat" }, [el("span", { class: "stat-label", text: "Readings per second" }), rate]),
        el("div", { class: "stat" }, [el("span", { class: "stat-label", text: "Frames per second" }), frames]),
      ]),
      el("section", { class: "panel", "aria-labelledby": "rate-h" }, [
        el("h2", { id: "rate-h", text: "Readings per second" }),
        el("figure", { class: "chart-card" }, [canvas]),
      ]),
      el("section", { class: "panel", "aria-labelledby": "commands-h" }, [
        el("h2", { id: "commands-h", text: "Commands by status" }),
        commands,
      ]),
      updated,
    ]),
  );

  function show(connectedN, readings, framesN, byStatus, atMs) {
    setText(connected, Number.isFinite(connectedN) ? String(connectedN) : "—");
    setText(rate, formatRate(readings));
    setText(frames, formatRate(framesN));
    for (const status of STATUSES) {
      const n = byStatus && typeof byStatus[status] === "number" ? byStatus[status] : 0;
      setText(counts.get(status), String(n));
    }
    setText(updated, `Updated ${new Date(atMs || Date.now()).toLocaleTimeString()}`);
  }

  function render() {
    const s = store.stats;
    if (s) show(s.connected_devices, s.readings_per_sec, s.frames_per_sec, s.commands, s.at_ms);
    const history = store.rateHistory;
    const now = history.length ? history[history.length - 1][0] : Date.now();
    // Up to ten minutes; a young history spreads over at least one minute.
    const first = history.length ? history[0][0] : now;
    const from = Math.min(now - 60000, Math.max(now - 600000, first));
    drawChart(canvas, history, from, now);
  }
  const schedule = frameBatcher(render);

  if (!store.stats) {
    api
      .status()
      .then((st) => {
        if (!alive || store.stats || !st) return;
        show(st.devices?.connected, st.rates?.readings_per_s, st.rates?.frames_per_s, st.commands, Date.now());
      })
      .catch(() => {});
  }
  const off = store.on("stats", schedule);
  const resize = new ResizeObserver(schedule);
  resize.observe(canvas);
  render();

  return () => {
    alive = false;
    schedule.cancel();
    resize.disconnect();
    off();
    clear(container);
  };
}
