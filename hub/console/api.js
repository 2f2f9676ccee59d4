// The REST side: every /api/v1 call with the signed-in key as a Bearer token.
// Failures become ApiError with the hub's own code and message (shown as
// text, never as markup).

/** A failed API call. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const BASE = "/api/v1";

/**
 * A client for one key. `onUnauthorized` runs when the hub answers 401 (the
 * key was revoked or is wrong), so the app can sign out.
 */
export function createApi(key, onUnauthorized = () => {}) {
  async function request(method, path, body) {
    const headers = { Authorization: `Bearer ${key}`, Accept: "application/json" };
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(BASE + path, init);
    } catch (err) {
      throw new ApiError(0, "network", "the hub cannot be reached");
    }
    let json = null;
    if (response.status !== 204) {
      try {
        json = await response.json();
      } catch (err) {
        json = null;
      }
    }
    if (!response.ok) {
      const error = json && json.error ? json.error : {};
      const failure = new ApiError(
        response.status,
        typeof error.code === "string" ? error.code : "http_" + response.status,
        typeof error.message === "string" ? error.message : `the hub answered ${response.status}`,
      );
      if (response.status === 401) onUnauthorized(failure);
      throw failure;
    }
    return json;
  }

  const enc = encodeURIComponent;
  return {
    me: () => request("GET", "/me"),
    status: () => request("GET", "/status"),
    devicesPage: (after, limit = 1000) =>
      request("GET", `/devices?limit=${limit}${after ? `&after=${enc(after)}` : ""}`),
    device: (id) => request("GET", `/devices/${enc(id)}`),
    latest: (id) => request("GET", `/devices/${enc(id)}/latest`),
    readings: (id, sensor, fromMs, toMs, after, limit = 10000) =>
      request(
        "GET",
        `/devices/${enc(id)}/sensors/${enc(sensor)}/readings?from=${enc(new Date(fromMs).toISOString())}` +
          `&to=${enc(new Date(toMs).toISOString())}&limit=${limit}${after ? `&after=${enc(after)}` : ""}`,
      ),
    commands: (id, limit = 50) => request("GET", `/devices/${enc(id)}/commands?limit=${limit}`),
    sendCommand: (id, body) => request("POST", `/devices/${enc(id)}/commands`, body),
  };
}

/**
 * Checks a key against GET /api/v1/me without side effects; resolves with
 * `{role, key_id, name}` or rejects with an ApiError.
 */
export function whoAmI(key) {
  return createApi(key).me();
}
