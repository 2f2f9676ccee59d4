// One device (#/devices/<id>): its latest values, a chart per sensor over a
// chosen window (history from the readings API, then appended from the
// stream), command forms per actuator for operators and admins, and its
// commands, updated live from the stream's "command" messages.

import { el, setText, setAttr, clear, frameBatcher } from "./dom.js";
import { drawChart } from "./chart.js";
import { chartValue } from "./store.js";
import { formatAgo, formatDateTime, formatValue, parseTime } from "./format.js";

const WINDOWS = [
  [300, "5 minutes"],
  [900, "15 minutes"],
  [3600, "1 hour"],
  [21600, "6 hours"],
  [86400, "24 hours"],
];
/** Readings fetched per sensor per window, at most (pages of 10,000). A
 * denser sensor shows the most recent part of the window that fits. */
const MAX_HISTORY = 100000;
const CHART_EVERY_MS = 250;
const SLIDE_EVERY_MS = 5000;
const MAX_COMMAND_ROWS = 100;

/** How far along its lifecycle a status is; a late answer never moves a row back. */
const STATUS_RANK = { queued: 0, sent: 1, delivered: 2, succeeded: 3, failed: 3, rejected: 3, expired: 3 };

let savedWindow = 300;

/**
 * Shows device `id` in `container`.
 * @returns {() => void} unmount
 */
export function mountDevice(container, { api, store, stream, role }, id) {
  let alive = true;
  const canCommand = role === "operator" || role === "admin";

  const title = el("h1", { class: "view-title", "data-testid": "device-title", text: id });
  const badge = el("span", { class: "badge", "data-online": "false", text: "offline" });
  const seen = el("span", { class: "muted" });
  const firmware = el("span", { class: "muted" });
  const problem = el("p", { class: "notice notice-error", role: "alert", hidden: true });
  const latestGrid = el("div", { class: "latest-grid" });
  const windowSelect = el(
    "select",
    { id: "chart-window", "data-testid": "chart-window" },
    WINDOWS.map(([secs, label]) => el("option", { value: String(secs), text: label })),
  );
  windowSelect.value = String(savedWindow);
  const charts = el("div", { class: "charts" });
  const forms = el("div", { class: "command-forms" });
  const commandList = el("ol", { class: "command-list", "aria-label": "Commands, newest first" });
  const commandsEmpty = el("p", { class: "muted", text: "No commands yet." });

  const page = el("section", { class: "device", "aria-labelledby": "device-title-h" }, [
    el("p", { class: "crumbs" }, [el("a", { href: "#/", text: "← Fleet" })]),
    el("div", { class: "device-head" }, [
      title,
      el("p", { class: "device-meta" }, [
        badge,
        el("span", { class: "mono", text: id }),
        seen,
        firmware,
      ]),
    ]),
    problem,
    el("section", { class: "panel", "aria-labelledby": "latest-h" }, [
      el("h2", { id: "latest-h", text: "Latest values" }),
      latestGrid,
    ]),
    el("section", { class: "panel", "aria-labelledby": "charts-h" }, [
      el("div", { class: "panel-head" }, [
        el("h2", { id: "charts-h", text: "Charts" }),
        el("div", { class: "field field-inline" }, [el("label", { for: "chart-window", text: "Window" }), windowSelect]),
      ]),
      charts,
    ]),
    canCommand
      ? el("section", { class: "panel", "aria-labelledby": "send-h" }, [
          el("h2", { id: "send-h", text: "Send a command" }),
          forms,
        ])
      : null,
    el("section", { class: "panel", "aria-labelledby": "commands-h" }, [
      el("h2", { id: "commands-h", text: "Commands" }),
      commandsEmpty,
      commandList,
    ]),
  ]);
  title.id = "device-title-h";
  container.append(page);

  /** @type {Map<number, {name: string, unit: string, kind: string, value: HTMLElement, time: HTMLElement, latestT: number, canvas: HTMLCanvasElement, points: Array<[number, number]>, pending: Array<[number, number]>|null}>} */
  const sensors = new Map();
  /** @type {Map<number, {row: HTMLElement, status: HTMLElement, reason: HTMLElement, rank: number}>} */
  const commandRows = new Map();
  let loaded = false;
  let historyGeneration = 0;
  let lastChartAt = 0;
  let chartTimer = 0;

  function fail(text) {
    problem.hidden = false;
    setText(problem, text);
  }

  function showPresence() {
    const d = store.devices.get(id);
    if (!d) return;
    setAttr(badge, "data-online", d.online ? "true" : "false");
    setText(badge, d.online ? "online" : "offline");
    setText(seen, `last seen ${formatAgo(d.lastSeenMs)}`);
    if (d.lastSeenMs) setAttr(seen, "title", formatDateTime(d.lastSeenMs));
  }

  function buildSensor(s) {
    const value = el("span", { class: "latest-value", "data-testid": "sensor-value", text: "—" });
    const time = el("span", { class: "latest-time muted", text: "no readings yet" });
    latestGrid.append(
      el("div", { class: "latest-card", "data-testid": "sensor-latest", "data-sensor": String(s.id) }, [
        el("span", { class: "latest-name", "data-testid": "sensor-name", text: s.name }),
        el("span", { class: "latest-reading" }, [
          value,
          " ",
          el("span", { class: "latest-unit", "data-testid": "sensor-unit", text: s.unit }),
        ]),
        time,
      ]),
    );
    const canvas = el("canvas", {
      class: "chart",
      "data-testid": "chart",
      "data-sensor": String(s.id),
      "data-points": "0",
      role: "img",
      "aria-label": `${s.name} over the chosen window`,
    });
    charts.append(
      el("figure", { class: "chart-card" }, [
        el("figcaption", {}, [
          el("span", { class: "chart-name", text: s.name }),
          s.unit ? el("span", { class: "muted", text: ` (${s.unit})` }) : null,
        ]),
        canvas,
      ]),
    );
    sensors.set(s.id, {
      name: s.name,
      unit: s.unit,
      kind: s.kind,
      value,
      time,
      latestT: -Infinity,
      canvas,
      points: [],
      pending: null,
    });
  }

  function showLatest(sensorId, v, t) {
    const s = sensors.get(sensorId);
    if (!s || t < s.latestT) return;
    s.latestT = t;
    setText(s.value, formatValue(v));
    setText(s.time, formatDateTime(t));
  }

  function buildForm(a) {
    const controlId = `command-value-${a.id}`;
    let control;
    if (a.kind === "bool") {
      control = el("select", { id: controlId, "data-testid": "command-value" }, [
        el("option", { value: "true", text: "true" }),
        el("option", { value: "false", text: "false" }),
      ]);
    } else {
      control = el("input", {
        id: controlId,
        "data-testid": "command-value",
        type: "number",
        step: a.kind === "int" ? "1" : "any",
        inputmode: a.kind === "int" ? "numeric" : "decimal",
        required: true,
      });
    }
    const send = el("button", { type: "submit", class: "button", "data-testid": "command-send", text: "Send" });
    const note = el("p", { class: "form-note", role: "status" });
    const form = el("form", { class: "command-form", "data-testid": "command-form", "data-actuator": String(a.id) }, [
      el("label", { for: controlId }, [
        el("span", { class: "actuator-name", text: a.name }),
        el("span", { class: "muted", text: ` (${a.kind})` }),
      ]),
      el("div", { class: "form-row" }, [control, send]),
      note,
    ]);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      let value;
      if (a.kind === "bool") value = control.value === "true";
      else {
        value = Number(control.value);
        if (control.value.trim() === "" || !Number.isFinite(value) || (a.kind === "int" && !Number.isInteger(value))) {
          note.classList.add("error");
          setText(note, a.kind === "int" ? "Enter a whole number." : "Enter a number.");
          return;
        }
      }
      send.disabled = true;
      note.classList.remove("error");
      setText(note, "Sending…");
      try {
        const command = await api.sendCommand(id, { actuator: a.id, value });
        if (!alive) return;
        upsertCommand(command);
        setText(note, `Command #${command.id} accepted; its status is listed below.`);
      } catch (err) {
        if (!alive) return;
        note.classList.add("error");
        setText(note, err.message || "The command was refused.");
      } finally {
        send.disabled = false;
      }
    });
    forms.append(form);
  }

  function describeAction(c) {
    if (c.action && typeof c.action === "object") {
      const args = Array.isArray(c.action.args) ? c.action.args.map(formatValue).join(", ") : "";
      return `${String(c.action.name)}(${args})`;
    }
    return formatValue(c.value);
  }

  function upsertCommand(c) {
    if (!c || typeof c.id !== "number" || c.device !== id) return;
    const rank = STATUS_RANK[c.status] ?? 0;
    let r = commandRows.get(c.id);
    if (!r) {
      const status = el("span", { class: "status", "data-testid": "command-status" });
      const reason = el("span", { class: "command-reason muted" });
      const created = parseTime(c.created_at);
      const row = el("li", { class: "command-row", "data-testid": "command-row", "data-command-id": String(c.id) }, [
        el("span", { class: "command-id mono", text: `#${c.id}` }),
        el("span", { class: "command-what" }, [
          el("span", { class: "actuator-name", text: String(c.actuator) }),
          " ← ",
          el("span", { class: "mono", text: describeAction(c) }),
        ]),
        status,
        el("span", { class: "command-time muted", text: created ? formatDateTime(created) : "" }),
        reason,
      ]);
      r = { row, status, reason, rank: -1 };
      commandRows.set(c.id, r);
      // Newest (highest id) first.
      let before = null;
      for (const child of commandList.children) {
        if (Number(child.getAttribute("data-command-id")) < c.id) {
          before = child;
          break;
        }
      }
      commandList.insertBefore(row, before);
      while (commandList.children.length > MAX_COMMAND_ROWS) {
        const oldest = commandList.lastElementChild;
        commandRows.delete(Number(oldest.getAttribute("data-command-id")));
        oldest.remove();
      }
      commandsEmpty.hidden = true;
    }
    if (rank < r.rank) return;
    r.rank = rank;
    setText(r.status, String(c.status));
    setAttr(r.status, "data-status", String(c.status));
    setText(r.reason, c.reason ? String(c.reason) : "");
  }

  async function loadCommands() {
    try {
      const body = await api.commands(id, 50);
      if (!alive) return;
      const list = Array.isArray(body && body.commands) ? body.commands : [];
      for (const c of list.slice().reverse()) upsertCommand(c);
    } catch (err) {
      if (alive && err.status !== 401) fail(`Commands could not be loaded: ${err.message}`);
    }
  }

  async function loadLatest() {
    try {
      const body = await api.latest(id);
      if (!alive) return;
      for (const s of Array.isArray(body && body.sensors) ? body.sensors : []) {
        if (typeof s.time_ms === "number" && s.value !== null && s.value !== undefined) showLatest(s.id, s.value, s.time_ms);
      }
    } catch (err) {
      if (alive && err.status !== 401) fail(`Latest values could not be loaded: ${err.message}`);
    }
  }

  async function loadHistory() {
    const generation = ++historyGeneration;
    const to = Date.now();
    const from = to - savedWindow * 1000;
    for (const s of sensors.values()) s.pending = [];
    await Promise.all(
      [...sensors.entries()].map(async ([sensorId, s]) => {
        let fetched = [];
        let after = null;
        let start = from;
        let restarted = false;
        try {
          while (fetched.length < MAX_HISTORY) {
            const body = await api.readings(id, sensorId, start, to, after);
            if (!alive || generation !== historyGeneration) return;
            for (const r of Array.isArray(body && body.readings) ? body.readings : []) {
              const v = chartValue(r.value);
              if (typeof r.time_ms === "number" && v !== null) fetched.push([r.time_ms, v]);
            }
            if (!body || typeof body.next !== "string" || !body.next) break;
            after = body.next;
            // Too dense for the whole window: start again with the most
            // recent span that fits, rather than the oldest.
            const covered = fetched.length ? fetched[fetched.length - 1][0] - start : 0;
            if (!restarted && covered > 0 && (fetched.length / covered) * (to - start) > MAX_HISTORY) {
              restarted = true;
              start = Math.floor(to - (MAX_HISTORY * 0.95 * covered) / fetched.length);
              fetched = [];
              after = null;
            }
          }
        } catch (err) {
          if (alive && err.status !== 401) fail(`History of ${s.name} could not be loaded: ${err.message}`);
        }
        if (!alive || generation !== historyGeneration) return;
        s.points = merge(fetched, s.pending || []);
        s.pending = null;
      }),
    );
    if (alive && generation === historyGeneration) redrawCharts(true);
  }

  function redrawCharts(now = false) {
    const wait = lastChartAt + CHART_EVERY_MS - Date.now();
    if (!now && wait > 0) {
      if (!chartTimer) chartTimer = setTimeout(() => {
        chartTimer = 0;
        scheduleCharts();
      }, wait);
      return;
    }
    lastChartAt = Date.now();
    const to = Date.now();
    const from = to - savedWindow * 1000;
    for (const s of sensors.values()) {
      // Forget what slid out of the window (with a little slack).
      let drop = 0;
      while (drop < s.points.length && s.points[drop][0] < from - 60000) drop++;
      if (drop) s.points.splice(0, drop);
      drawChart(s.canvas, s.points, from, to);
    }
  }
  const scheduleCharts = frameBatcher(() => redrawCharts());

  function onTelemetry(m) {
    if (m.device !== id || !loaded) return;
    for (const r of m.readings) {
      if (!r || typeof r.sensor !== "number" || typeof r.t !== "number") continue;
      const s = sensors.get(r.sensor);
      if (!s) continue;
      showLatest(r.sensor, r.v, r.t);
      const v = chartValue(r.v);
      if (v === null) continue;
      const target = s.pending || s.points;
      const last = target[target.length - 1];
      if (!last || r.t > last[0]) target.push([r.t, v]);
      else if (r.t < last[0]) {
        target.push([r.t, v]);
        target.sort((a, b) => a[0] - b[0]);
      }
    }
    scheduleCharts();
  }

  async function load() {
    let detail;
    try {
      detail = await api.device(id);
    } catch (err) {
      if (!alive) return;
      if (err.status === 404) {
        setText(title, "Device not found");
        fail(`There is no device with id ${id}.`);
      } else if (err.status !== 401) {
        fail(`The device could not be loaded: ${err.message}`);
      }
      return;
    }
    if (!alive) return;
    setText(title, typeof detail.name === "string" && detail.name ? detail.name : id);
    document.title = `${title.textContent} · Hub console`;
    if (typeof detail.firmware === "string") setText(firmware, `firmware ${detail.firmware}`);
    if (!store.devices.has(id)) {
      const lastSeen = parseTime(detail.last_seen);
      store.devices.set(id, { id, name: detail.name ?? null, online: detail.online === true, lastSeenMs: lastSeen });
    }
    showPresence();
    const declared = Array.isArray(detail.sensors) ? detail.sensors : [];
    for (const s of declared) if (typeof s.id === "number") buildSensor({ id: s.id, name: String(s.name), unit: String(s.unit ?? ""), kind: String(s.kind) });
    if (!declared.length) latestGrid.append(el("p", { class: "muted", text: "This device has declared no sensors yet." }));
    if (canCommand) {
      const actuators = Array.isArray(detail.actuators) ? detail.actuators : [];
      for (const a of actuators) if (typeof a.id === "number") buildForm({ id: a.id, name: String(a.name), kind: String(a.kind) });
      if (!actuators.length) forms.append(el("p", { class: "muted", text: "This device has declared no actuators." }));
    }
    loaded = true;
    await Promise.all([loadLatest(), loadHistory(), loadCommands()]);
  }

  function resync() {
    if (!loaded) return;
    loadLatest();
    loadHistory();
    loadCommands();
  }

  windowSelect.addEventListener("change", () => {
    savedWindow = Number(windowSelect.value) || 300;
    for (const s of sensors.values()) s.points = [];
    redrawCharts(true);
    loadHistory();
  });

  stream.setInterest("device", [id]);
  stream.sendSubscription();
  let sawWelcome = stream.state === "live";
  const off = [
    store.on("devices", showPresence),
    store.on("telemetry", onTelemetry),
    store.on("command", upsertCommand),
    stream.on("resync", resync),
    stream.on("welcome", () => {
      // The first welcome after this page loaded: readings stored between
      // the history query and the subscription would be missing.
      if (!sawWelcome) {
        sawWelcome = true;
        resync();
      }
    }),
  ];
  const resize = new ResizeObserver(() => scheduleCharts());
  resize.observe(charts);
  const slide = setInterval(() => {
    showPresence();
    scheduleCharts();
  }, SLIDE_EVERY_MS);
  load();

  return () => {
    alive = false;
    historyGeneration++;
    scheduleCharts.cancel();
    clearTimeout(chartTimer);
    clearInterval(slide);
    resize.disconnect();
    for (const f of off) f();
    stream.setInterest("device", []);
    clear(container);
  };
}

/** Sorted union of two time series; one point per timestamp. */
function merge(a, b) {
  const all = a.concat(b).sort((x, y) => x[0] - y[0]);
  const out = [];
  for (const p of all) {
    if (out.length && out[out.length - 1][0] === p[0]) out[out.length - 1] = p;
    else out.push(p);
  }
  return out;
}
