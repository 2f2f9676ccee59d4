// The signed-in key. It lives in sessionStorage: this tab only, gone when
// the tab closes, never in a cookie, a URL or localStorage.

const KEY = "hub.console.key";

/** The stored key, or null. */
export function storedKey() {
  try {
    return sessionStorage.getItem(KEY);
  } catch (err) {
    return null;
  }
}

/** Keeps `key` for this tab. */
export function storeKey(key) {
  try {
    sessionStorage.setItem(KEY, key);
  } catch (err) {
    // Storage disabled: the key lives in memory for this page only.
  }
}

/** Forgets everything this tab stored. */
export function clearSession() {
  try {
    sessionStorage.clear();
  } catch (err) {
    // Nothing stored.
  }
}
