// Tiny DOM helpers. Everything the console renders goes through these, and
// they only ever use createElement, setAttribute and textContent: a device
// name or an error message from the hub can never become markup.

/**
 * Creates an element.
 * @param {string} tag
 * @param {Object<string, string|number|boolean|null|undefined>} [attrs]
 *   attributes; `text` sets textContent, `class` the class list. `null`,
 *   `undefined` and `false` leave an attribute out, `true` sets it empty.
 * @param {Array<Node|string|null|undefined>} [children] strings become text nodes
 * @returns {HTMLElement}
 */
export function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") {
      node.textContent = String(value);
    } else if (value === true) {
      node.setAttribute(name, "");
    } else {
      node.setAttribute(name, String(value));
    }
  }
  append(node, children);
  return node;
}

/** Appends nodes and strings (as text) to `parent`. */
export function append(parent, children) {
  for (const child of children) {
    if (child === null || child === undefined) continue;
    parent.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return parent;
}

/** Sets the text of `node` if it changed (cheap to call every frame). */
export function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

/** Sets an attribute if it changed. */
export function setAttr(node, name, value) {
  const text = String(value);
  if (node.getAttribute(name) !== text) node.setAttribute(name, text);
}

/** Removes every child of `node`. */
export function clear(node) {
  node.replaceChildren();
}

/** The element with `data-testid` = `id` under `root`. */
export function byTestId(root, id) {
  return root.querySelector(`[data-testid="${id}"]`);
}

/**
 * Calls `fn` at most once per animation frame, however often `schedule` is
 * called in between: the console batches its DOM updates this way.
 */
export function frameBatcher(fn) {
  let pending = 0;
  const schedule = () => {
    if (pending) return;
    pending = requestAnimationFrame(() => {
      pending = 0;
      fn();
    });
  };
  schedule.cancel = () => {
    if (pending) cancelAnimationFrame(pending);
    pending = 0;
  };
  return schedule;
}
