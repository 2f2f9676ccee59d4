// What the console knows about the fleet, in one place: every device's
// name and presence (from the REST list, then the stream's snapshots and
// presence messages), a short recent series per sensor for the sparklines
// (only for devices whose telemetry the stream sends us), and the hub's
// stats. Views read from here and listen to its events:
//   "devices"   the set, a name or a presence changed ({presenceOnly: true}
//               when only a known device's presence did)
//   "telemetry" a telemetry message was applied ({device, readings})
//   "command"   a command changed status (the CommandView object)
//   "stats"     a stats message arrived

import { Emitter } from "./events.js";

/** Points kept per sensor for sparklines. */
const SPARK_POINTS = 120;
/** Stats samples kept for the overview's rate chart (one per second). */
const STATS_HISTORY = 600;

/** A reading value as a number for charts (booleans as 0/1), or null. */
export function chartValue(v) {
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "number" && Number.isFinite(v)) return v;
  return null;
}

export class Store extends Emitter {
  constructor() {
    super();
    /** @type {Map<string, {id: string, name: string|null, online: boolean, lastSeenMs: number|null}>} */
    this.devices = new Map();
    /** @type {Map<string, Map<number, {name: string, unit: string, count: number, points: Array<[number, number]>}>>} */
    this.series = new Map();
    this.snapshotSeen = false;
    this.stats = null;
    /** @type {Array<[number, number]>} readings/s over time */
    this.rateHistory = [];
    /** Asks for the name of a device first seen in a presence message. */
    this.lookupName = null;
    this.lookedUp = new Set();
  }

  /** Loads the device list over REST (all pages), for a fleet before the stream is live. */
  async loadFromApi(api) {
    let after = null;
    for (let page = 0; page < 100; page++) {
      const body = await api.devicesPage(after);
      const list = Array.isArray(body && body.devices) ? body.devices : [];
      for (const d of list) {
        if (typeof d.id !== "string") continue;
        const known = this.devices.get(d.id);
        if (known && this.snapshotSeen) {
          if (known.name === null && typeof d.name === "string") known.name = d.name;
          continue;
        }
        const lastSeen = d.last_seen ? Date.parse(d.last_seen) : NaN;
        this.devices.set(d.id, {
          id: d.id,
          name: typeof d.name === "string" ? d.name : null,
          online: d.online === true,
          lastSeenMs: Number.isNaN(lastSeen) ? null : lastSeen,
        });
      }
      this.emit("devices");
      if (!body || typeof body.next !== "string" || !body.next) break;
      after = body.next;
    }
  }

  applySnapshot(message) {
    const list = Array.isArray(message.devices) ? message.devices : [];
    const next = new Map();
    for (const d of list) {
      if (!d || typeof d.id !== "string") continue;
      next.set(d.id, {
        id: d.id,
        name: typeof d.name === "string" ? d.name : null,
        online: d.online === true,
        lastSeenMs: typeof d.last_seen_ms === "number" ? d.last_seen_ms : null,
      });
    }
    if (message.truncated === true) {
      // Keep what we know about devices beyond the snapshot's cut.
      for (const [id, d] of this.devices) if (!next.has(id)) next.set(id, d);
    }
    this.devices = next;
    this.snapshotSeen = true;
    for (const id of this.series.keys()) if (!next.has(id)) this.series.delete(id);
    this.emit("devices");
  }

  applyPresence(message) {
    if (typeof message.device !== "string") return;
    let d = this.devices.get(message.device);
    const known = Boolean(d);
    if (!d) {
      d = { id: message.device, name: null, online: false, lastSeenMs: null };
      this.devices.set(d.id, d);
      if (this.lookupName && !this.lookedUp.has(d.id)) {
        this.lookedUp.add(d.id);
        this.lookupName(d.id);
      }
    }
    d.online = message.online === true;
    if (typeof message.at_ms === "number") d.lastSeenMs = Math.max(d.lastSeenMs || 0, message.at_ms);
    // A known device changing presence keeps the set and the order.
    this.emit("devices", { presenceOnly: known });
  }

  /** Sets a device's name (from a lazy REST lookup). */
  setName(id, name) {
    const d = this.devices.get(id);
    if (d && typeof name === "string") {
      d.name = name;
      this.emit("devices");
    }
  }

  applyTelemetry(message) {
    if (typeof message.device !== "string" || !Array.isArray(message.readings)) return;
    let sensors = this.series.get(message.device);
    if (!sensors) {
      sensors = new Map();
      this.series.set(message.device, sensors);
    }
    let newest = null;
    for (const r of message.readings) {
      if (!r || typeof r.sensor !== "number" || typeof r.t !== "number") continue;
      let s = sensors.get(r.sensor);
      if (!s) {
        s = { name: String(r.name ?? r.sensor), unit: String(r.unit ?? ""), count: 0, points: [] };
        sensors.set(r.sensor, s);
      }
      s.count += 1;
      const v = chartValue(r.v);
      if (v !== null) {
        s.points.push([r.t, v]);
        if (s.points.length > SPARK_POINTS * 1.5) s.points.splice(0, s.points.length - SPARK_POINTS);
      }
      newest = newest === null ? r.t : Math.max(newest, r.t);
    }
    const d = this.devices.get(message.device);
    if (d && newest !== null) d.lastSeenMs = Math.max(d.lastSeenMs || 0, Math.min(newest, Date.now()));
    this.emit("telemetry", message);
  }

  /** The sensor of `id` with the most readings seen, or null. */
  busiest(id) {
    const sensors = this.series.get(id);
    if (!sensors) return null;
    let best = null;
    for (const s of sensors.values()) if (!best || s.count > best.count) best = s;
    return best;
  }

  applyStats(message) {
    this.stats = message;
    const t = typeof message.at_ms === "number" ? message.at_ms : Date.now();
    const rate = typeof message.readings_per_sec === "number" ? message.readings_per_sec : 0;
    this.rateHistory.push([t, rate]);
    if (this.rateHistory.length > STATS_HISTORY) this.rateHistory.splice(0, this.rateHistory.length - STATS_HISTORY);
    this.emit("stats", message);
  }

  applyCommand(message) {
    if (message && message.command && typeof message.command === "object") this.emit("command", message.command);
  }
}
