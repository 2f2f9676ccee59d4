// Hash routes: "#/" the fleet, "#/devices/<id>" one device, "#/overview"
// the hub. Anything else falls back to the fleet.

/** @returns {{view: "fleet"|"device"|"overview", id?: string}} */
export function parseRoute(hash) {
  const path = (hash || "").replace(/^#/, "") || "/";
  if (path === "/overview") return { view: "overview" };
  const match = /^\/devices\/([^/]+)$/.exec(path);
  if (match) {
    try {
      return { view: "device", id: decodeURIComponent(match[1]) };
    } catch (err) {
      return { view: "fleet" };
    }
  }
  return { view: "fleet" };
}

/** The hash of a device's page. */
export function deviceHref(id) {
  return `#/devices/${encodeURIComponent(id)}`;
}

/** Calls `onRoute(route)` now and on every hash change; returns a stop function. */
export function watchRoutes(onRoute) {
  const handler = () => onRoute(parseRoute(location.hash));
  window.addEventListener("hashchange", handler);
  handler();
  return () => window.removeEventListener("hashchange", handler);
}
