// The fleet (#/): every device in a virtualised list.
//
// Rows have a fixed height and only the visible ones (plus a few either
// side) exist in the DOM, absolutely placed inside a spacer as tall as the
// whole list, so 10,000 devices cost as much as 20. DOM updates are batched
// into one animation frame; sparklines (each row's busiest sensor, from the
// stream) redraw at most every SPARK_EVERY_MS. The stream is asked for the
// telemetry of the visible devices only.

import { el, setText, setAttr, frameBatcher } from "./dom.js";
import { drawSparkline } from "./chart.js";
import { formatAgo, formatDateTime } from "./format.js";
import { deviceHref } from "./router.js";

const OVERSCAN = 4;
const SPARK_EVERY_MS = 500;
const AGO_REFRESH_MS = 5000;

/** Search, filter and scroll survive a visit to a device page. */
const saved = { query: "", filter: "all", scrollTop: 0 };

/**
 * Shows the fleet in `container`.
 * @param {HTMLElement} container
 * @param {{store: import("./store.js").Store, stream: import("./stream.js").LiveStream}} ctx
 * @returns {() => void} unmount
 */
export function mountFleet(container, { store, stream }) {
  const search = el("input", {
    type: "search",
    id: "fleet-search",
    "data-testid": "fleet-search",
    placeholder: "Search by name or id",
    autocomplete: "off",
    spellcheck: "false",
  });
  search.value = saved.query;
  const filter = el("select", { id: "fleet-filter", "data-testid": "fleet-filter" }, [
    el("option", { value: "all", text: "All" }),
    el("option", { value: "online", text: "Online" }),
    el("option", { value: "offline", text: "Offline" }),
  ]);
  filter.value = saved.filter;
  const count = el("span", { "data-testid": "fleet-count", text: "0" });
  const spacer = el("div", { class: "fleet-spacer" });
  const list = el("div", { class: "fleet-list", "aria-label": "Devices" }, [spacer]);
  const empty = el("p", { class: "fleet-empty", hidden: true, role: "status" });

  container.append(
    el("section", { class: "fleet", "aria-labelledby": "fleet-heading" }, [
      el("div", { class: "fleet-toolbar" }, [
        el("h1", { id: "fleet-heading", class: "view-title", text: "Fleet" }),
        el("div", { class: "field" }, [
          el("label", { for: "fleet-search", class: "visually-hidden", text: "Search devices" }),
          search,
        ]),
        el("div", { class: "field field-inline" }, [el("label", { for: "fleet-filter", text: "Show" }), filter]),
        el("p", { class: "fleet-count", "aria-live": "polite" }, [count, " devices"]),
      ]),
      el("div", { class: "fleet-head", "aria-hidden": "true" }, [
        el("span", { text: "Device" }),
        el("span", { text: "Status" }),
        el("span", { text: "Last seen" }),
        el("span", { text: "Activity" }),
      ]),
      list,
      empty,
    ]),
  );

  const rowHeight = () => parseFloat(getComputedStyle(list).getPropertyValue("--row-h")) || 60;

  /** @type {Array<{id: string, name: string|null, online: boolean, lastSeenMs: number|null}>} */
  let matching = [];
  let filterDirty = true;
  /** @type {Map<string, {row: HTMLElement, name: HTMLElement, id: HTMLElement, online: HTMLElement, seen: HTMLElement, spark: HTMLCanvasElement, index: number}>} */
  const rows = new Map();
  const sparkDirty = new Set();
  let lastSparkAt = 0;
  let sparkTimer = 0;
  let subscribed = "";

  function recompute() {
    const q = saved.query.trim().toLowerCase();
    const want = saved.filter;
    const out = [];
    for (const d of store.devices.values()) {
      if (want === "online" && !d.online) continue;
      if (want === "offline" && d.online) continue;
      if (q && !d.id.toLowerCase().includes(q) && !(d.name || "").toLowerCase().includes(q)) continue;
      out.push(d);
    }
    out.sort((a, b) => {
      const an = (a.name || a.id).toLowerCase();
      const bn = (b.name || b.id).toLowerCase();
      return an < bn ? -1 : an > bn ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
    });
    matching = out;
    setText(count, out.length);
    empty.hidden = out.length > 0;
    setText(empty, store.devices.size === 0 ? "No devices yet." : "No devices match.");
  }

  function makeRow(id) {
    const name = el("span", { class: "row-name", "data-testid": "device-name" });
    const idText = el("span", { class: "row-id", text: id });
    const online = el("span", { class: "badge", "data-testid": "device-online", "data-online": "false" });
    const seen = el("span", { class: "row-seen", "data-testid": "device-last-seen" });
    const spark = el("canvas", {
      class: "sparkline",
      "data-testid": "sparkline",
      "data-points": "0",
      "aria-hidden": "true",
    });
    const row = el(
      "a",
      { class: "row", href: deviceHref(id), "data-testid": "device-row", "data-device-id": id },
      [el("span", { class: "row-main" }, [name, idText]), online, seen, spark],
    );
    return { row, name, id: idText, online, seen, spark, index: -1 };
  }

  function fillRow(r, d, now) {
    setText(r.name, d.name || d.id);
    r.id.hidden = !d.name;
    setAttr(r.online, "data-online", d.online ? "true" : "false");
    setText(r.online, d.online ? "online" : "offline");
    setText(r.seen, formatAgo(d.lastSeenMs, now));
    setAttr(r.seen, "title", d.lastSeenMs ? formatDateTime(d.lastSeenMs) : "never connected");
    r.row.setAttribute("aria-label", `${d.name || d.id}, ${d.online ? "online" : "offline"}, last seen ${formatAgo(d.lastSeenMs, now)}`);
  }

  function drawSpark(id, r) {
    const series = store.busiest(id);
    drawSparkline(r.spark, series ? series.points : []);
  }

  function render() {
    if (filterDirty) {
      filterDirty = false;
      recompute();
    }
    const rh = rowHeight();
    spacer.style.height = `${matching.length * rh}px`;
    const top = list.scrollTop;
    const height = list.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / rh) - OVERSCAN);
    const last = Math.min(matching.length, Math.ceil((top + height) / rh) + OVERSCAN);
    const visible = new Set();
    for (let i = first; i < last; i++) visible.add(matching[i].id);
    for (const [id, r] of rows) {
      if (!visible.has(id)) {
        r.row.remove();
        rows.delete(id);
        sparkDirty.delete(id);
      }
    }
    const now = Date.now();
    const fresh = [];
    for (let i = first; i < last; i++) {
      const d = matching[i];
      let r = rows.get(d.id);
      if (!r) {
        r = makeRow(d.id);
        rows.set(d.id, r);
        spacer.append(r.row);
        fresh.push([d.id, r]);
      }
      if (r.index !== i) {
        r.index = i;
        r.row.style.transform = `translateY(${i * rh}px)`;
      }
      fillRow(r, d, now);
    }
    for (const [id, r] of fresh) drawSpark(id, r);
    drawDirtySparks();
    const ids = [...visible].sort().join("\n");
    if (ids !== subscribed) {
      subscribed = ids;
      stream.setInterest("fleet", [...visible]);
    }
  }

  function drawDirtySparks() {
    if (!sparkDirty.size) return;
    const wait = lastSparkAt + SPARK_EVERY_MS - Date.now();
    if (wait > 0) {
      if (!sparkTimer) {
        sparkTimer = setTimeout(() => {
          sparkTimer = 0;
          schedule();
        }, wait);
      }
      return;
    }
    lastSparkAt = Date.now();
    for (const id of sparkDirty) {
      const r = rows.get(id);
      if (r) drawSpark(id, r);
    }
    sparkDirty.clear();
  }

  const schedule = frameBatcher(render);

  const off = [
    store.on("devices", (change) => {
      // Presence alone changes what matches only under the online/offline filters.
      if (!(change && change.presenceOnly && saved.filter === "all")) filterDirty = true;
      schedule();
    }),
    store.on("telemetry", (m) => {
      if (rows.has(m.device)) {
        sparkDirty.add(m.device);
        schedule();
      }
    }),
  ];
  search.addEventListener("input", () => {
    saved.query = search.value;
    filterDirty = true;
    list.scrollTop = 0;
    schedule();
  });
  filter.addEventListener("change", () => {
    saved.filter = filter.value;
    filterDirty = true;
    list.scrollTop = 0;
    schedule();
  });
  list.addEventListener("scroll", () => {
    saved.scrollTop = list.scrollTop;
    schedule();
  }, { passive: true });
  list.addEventListener("keydown", (event) => {
    const row = event.target.closest && event.target.closest("[data-testid=device-row]");
    if (!row) return;
    const r = rows.get(row.getAttribute("data-device-id"));
    if (!r) return;
    let next = -1;
    if (event.key === "ArrowDown") next = r.index + 1;
    else if (event.key === "ArrowUp") next = r.index - 1;
    else if (event.key === "Home") next = 0;
    else if (event.key === "End") next = matching.length - 1;
    else if (event.key === " ") {
      event.preventDefault();
      row.click();
      return;
    } else return;
    event.preventDefault();
    if (next < 0 || next >= matching.length) return;
    focusIndex(next);
  });

  function focusIndex(index) {
    const rh = rowHeight();
    const top = index * rh;
    if (top < list.scrollTop) list.scrollTop = top;
    else if (top + rh > list.scrollTop + list.clientHeight) list.scrollTop = top + rh - list.clientHeight;
    schedule.cancel();
    render();
    const r = rows.get(matching[index].id);
    if (r) r.row.focus();
  }

  const resize = new ResizeObserver(() => {
    for (const id of rows.keys()) sparkDirty.add(id);
    lastSparkAt = 0;
    schedule();
  });
  resize.observe(list);
  const agoTimer = setInterval(schedule, AGO_REFRESH_MS);

  render();
  if (saved.scrollTop) {
    list.scrollTop = saved.scrollTop;
    render();
  }

  return () => {
    schedule.cancel();
    clearTimeout(sparkTimer);
    clearInterval(agoTimer);
    resize.disconnect();
    for (const f of off) f();
    stream.setInterest("fleet", []);
  };
}
