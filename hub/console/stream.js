// The live stream: one WebSocket to /api/v1/stream per tab.
//
// - The key goes in the first message ({"type":"auth"}), never in the URL.
// - Connection state for the header: "connecting" (first attempt),
//   "live" (after the hub's welcome), "reconnecting" (any loss until the next
//   welcome). A refused key (close 4001) stops retrying and signs out.
// - Reconnects use exponential backoff with jitter (0.5 s doubling to 30 s,
//   each delay drawn from its upper half), so a restarted hub is not hit by
//   every console at the same instant.
// - Views declare which devices they want telemetry for (setInterest); the
//   union is sent as one "subscribe" (at most 1000 ids), coalesced, and sent
//   again after every reconnect.
// - A connection that stays silent for longer than WATCHDOG_MS (the hub
//   sends stats every second) is treated as dead and replaced.

import { Emitter } from "./events.js";

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 30000;
const WATCHDOG_MS = 15000;
const SUBSCRIBE_COALESCE_MS = 150;
const MAX_SUBSCRIBE = 1000;

/** Close codes after which retrying with the same key is pointless. */
const CLOSE_INVALID_KEY = 4001;

export class LiveStream extends Emitter {
  /**
   * @param {string} key the API key
   * @param {string} [url] defaults to this page's host
   */
  constructor(key, url) {
    super();
    this.key = key;
    this.url = url || `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/stream`;
    /** @type {"connecting"|"live"|"reconnecting"} */
    this.state = "connecting";
    this.socket = null;
    this.attempt = 0;
    this.retryTimer = 0;
    this.watchdog = 0;
    this.lastMessageAt = 0;
    this.stopped = true;
    this.everLive = false;
    /** @type {Map<string, string[]>} device ids wanted, per view */
    this.interest = new Map();
    this.lastSent = null;
    this.subscribeTimer = 0;
    this.onOnline = () => {
      if (!this.stopped && this.state === "reconnecting" && !this.socket) this.connectNow();
    };
  }

  /** Opens the connection (and keeps it open until stop). */
  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    this.setState("connecting");
    this.connect();
  }

  /** Closes the connection for good (sign-out). */
  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.retryTimer);
    clearTimeout(this.subscribeTimer);
    clearInterval(this.watchdog);
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      detach(socket);
      try {
        socket.close(1000, "signed out");
      } catch (err) {
        // Already closed.
      }
    }
  }

  /** Replaces the devices `owner` wants telemetry for. */
  setInterest(owner, ids) {
    if (ids.length) this.interest.set(owner, ids);
    else this.interest.delete(owner);
    if (this.subscribeTimer) return;
    this.subscribeTimer = setTimeout(() => {
      this.subscribeTimer = 0;
      this.sendSubscription();
    }, SUBSCRIBE_COALESCE_MS);
  }

  /** Device ids currently wanted by any view. */
  wanted() {
    const all = new Set();
    for (const ids of this.interest.values()) for (const id of ids) all.add(id);
    return [...all].sort().slice(0, MAX_SUBSCRIBE);
  }

  sendSubscription() {
    if (this.state !== "live") return;
    const devices = this.wanted();
    const signature = devices.join("\n");
    if (signature === this.lastSent) return;
    if (this.send({ type: "subscribe", devices })) this.lastSent = signature;
  }

  send(message) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", state);
  }

  connectNow() {
    clearTimeout(this.retryTimer);
    this.retryTimer = 0;
    this.connect();
  }

  connect() {
    if (this.stopped) return;
    let socket;
    try {
      socket = new WebSocket(this.url);
    } catch (err) {
      this.scheduleRetry();
      return;
    }
    this.socket = socket;
    // The watchdog counts from the attempt, not from the last connection.
    this.lastMessageAt = Date.now();
    socket.onopen = () => {
      this.lastMessageAt = Date.now();
      socket.send(JSON.stringify({ type: "auth", key: this.key }));
    };
    socket.onmessage = (event) => this.receive(event.data);
    socket.onerror = () => {
      // onclose follows and decides what to do.
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      clearInterval(this.watchdog);
      if (this.stopped) return;
      if (event.code === CLOSE_INVALID_KEY) {
        this.stop();
        this.emit("unauthorized", event.reason || "invalid API key");
        return;
      }
      this.scheduleRetry();
    };
    clearInterval(this.watchdog);
    this.watchdog = setInterval(() => {
      if (Date.now() - this.lastMessageAt > WATCHDOG_MS && this.socket === socket) {
        // Silent too long: replace it. Detach first so the close is not reported twice.
        this.socket = null;
        detach(socket);
        try {
          socket.close(4000, "stream went silent");
        } catch (err) {
          // Nothing to close.
        }
        clearInterval(this.watchdog);
        this.scheduleRetry();
      }
    }, 1000);
  }

  scheduleRetry() {
    if (this.stopped) return;
    this.setState("reconnecting");
    const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt = Math.min(this.attempt + 1, 16);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = 0;
      this.connect();
    }, delay);
  }

  receive(data) {
    this.lastMessageAt = Date.now();
    if (typeof data !== "string") return;
    let message;
    try {
      message = JSON.parse(data);
    } catch (err) {
      return;
    }
    if (!message || typeof message.type !== "string") return;
    switch (message.type) {
      case "welcome": {
        const reconnected = this.everLive;
        this.everLive = true;
        this.attempt = 0;
        this.lastSent = null;
        this.setState("live");
        this.emit("welcome", message);
        this.sendSubscription();
        if (reconnected) this.emit("resync", "reconnect");
        break;
      }
      case "snapshot":
        this.emit("snapshot", message);
        if (message.reason === "lagged") this.emit("resync", "lagged");
        break;
      case "presence":
      case "telemetry":
      case "command":
      case "stats":
      case "error":
        this.emit(message.type, message);
        break;
      default:
        break;
    }
  }
}

function detach(socket) {
  socket.onopen = null;
  socket.onmessage = null;
  socket.onerror = null;
  socket.onclose = null;
}
