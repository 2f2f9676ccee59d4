// The console's entry point: sign-in and sign-out, the header (stream
// state, role), and switching views on hash changes. It owns the session:
// the REST client, the live stream and the store live exactly as long as
// the signed-in key.

import { clear, setAttr, setText } from "./dom.js";
import { createApi, whoAmI } from "./api.js";
import { LiveStream } from "./stream.js";
import { Store } from "./store.js";
import { watchRoutes } from "./router.js";
import { storedKey, storeKey, clearSession } from "./session.js";
import { mountFleet } from "./fleet.js";
import { mountDevice } from "./device.js";
import { mountOverview } from "./overview.js";

const $ = (id) => document.getElementById(id);
const ui = {
  nav: $("nav"),
  session: $("session"),
  conn: document.querySelector("[data-testid=conn-state]"),
  role: $("role"),
  signout: $("signout"),
  signin: $("signin"),
  form: $("signin-form"),
  key: $("signin-key"),
  submit: $("signin-submit"),
  error: $("signin-error"),
  view: $("view"),
};

const ROLES = new Set(["viewer", "operator", "admin"]);

/** @type {null | {api: object, stream: LiveStream, store: Store, role: string, unroute: () => void, unmount: () => void}} */
let session = null;

function showSignin(message) {
  ui.nav.hidden = true;
  ui.session.hidden = true;
  ui.signin.hidden = false;
  ui.view.hidden = true;
  clear(ui.view);
  ui.error.hidden = !message;
  setText(ui.error, message || "");
  ui.submit.disabled = false;
  ui.key.focus();
}

function setConn(state) {
  setAttr(ui.conn, "data-state", state);
  setText(ui.conn, state);
}

function start(key, me) {
  const role = ROLES.has(me && me.role) ? me.role : "viewer";
  const api = createApi(key, () => signOut("The hub no longer accepts this API key. Sign in again."));
  const store = new Store();
  const stream = new LiveStream(key);
  store.lookupName = (id) =>
    api
      .device(id)
      .then((d) => store.setName(id, d && d.name))
      .catch(() => {});
  stream.on("state", setConn);
  stream.on("snapshot", (m) => store.applySnapshot(m));
  stream.on("presence", (m) => store.applyPresence(m));
  stream.on("telemetry", (m) => store.applyTelemetry(m));
  stream.on("command", (m) => store.applyCommand(m));
  stream.on("stats", (m) => store.applyStats(m));
  stream.on("unauthorized", () => signOut("The hub refused this API key on the live stream. Sign in again."));

  session = { api, stream, store, role, unroute: () => {}, unmount: () => {} };
  ui.signin.hidden = true;
  ui.error.hidden = true;
  ui.view.hidden = false;
  ui.nav.hidden = false;
  ui.session.hidden = false;
  setText(ui.role, role);
  setAttr(ui.role, "title", me && typeof me.name === "string" ? `key “${me.name}”` : "API key role");
  setConn("connecting");
  stream.start();
  store.loadFromApi(api).catch((err) => console.warn("device list:", err.message));

  let first = true;
  const current = session;
  current.unroute = watchRoutes((route) => {
    if (session !== current) return;
    current.unmount();
    clear(ui.view);
    for (const link of ui.nav.querySelectorAll("a")) {
      if (link.getAttribute("data-nav") === route.view) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    const ctx = { api, store, stream, role };
    if (route.view === "device") {
      current.unmount = mountDevice(ui.view, ctx, route.id);
    } else if (route.view === "overview") {
      document.title = "Overview · Hub console";
      current.unmount = mountOverview(ui.view, ctx);
    } else {
      document.title = "Fleet · Hub console";
      current.unmount = mountFleet(ui.view, ctx);
    }
    if (!first) {
      // Tell keyboard and screen-reader users where they landed.
      const heading = ui.view.querySelector("h1");
      if (heading) {
        heading.setAttribute("tabindex", "-1");
        heading.focus({ preventScroll: true });
      }
    }
    first = false;
  });
}

function signOut(message) {
  if (session) {
    const ending = session;
    session = null;
    ending.stream.stop();
    ending.unroute();
    ending.unmount();
  }
  clearSession();
  document.title = "Hub console";
  setConn("connecting");
  setText(ui.role, "");
  showSignin(message);
}

function explain(err) {
  switch (err.status) {
    case 401:
      return "That API key is not valid.";
    case 403:
      return "That API key may not use the console.";
    case 429:
      return "Too many failed attempts from here. Wait a minute and try again.";
    case 0:
      return "The hub cannot be reached.";
    default:
      return err.message || "Sign-in failed.";
  }
}

ui.form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = ui.key.value.trim();
  if (!key) {
    showSignin("Enter an API key.");
    return;
  }
  ui.submit.disabled = true;
  ui.error.hidden = true;
  try {
    const me = await whoAmI(key);
    ui.key.value = "";
    storeKey(key);
    start(key, me);
  } catch (err) {
    showSignin(explain(err));
  }
});

ui.signout.addEventListener("click", () => signOut(""));

async function boot() {
  const key = storedKey();
  if (!key) {
    showSignin("");
    return;
  }
  try {
    start(key, await whoAmI(key));
  } catch (err) {
    if (err.status === 401) {
      clearSession();
      showSignin("Your API key is no longer valid. Sign in again.");
    } else {
      // Keep the key: the hub may just be restarting.
      showSignin(explain(err));
    }
  }
}

boot();
