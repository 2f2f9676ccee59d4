// A minimal event emitter, so the stream, the store and the views can talk
// without knowing each other.

export class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this.handlers = new Map();
  }

  /** Registers `fn` for `type`; returns a function that removes it. */
  on(type, fn) {
    let set = this.handlers.get(type);
    if (!set) {
      set = new Set();
      this.handlers.set(type, set);
    }
    set.add(fn);
    return () => set.delete(fn);
  }

  /** Calls every handler of `type`; one failing handler does not stop the others. */
  emit(type, payload) {
    const set = this.handlers.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(payload);
      } catch (err) {
        console.error(`handler for ${type} failed`, err);
      }
    }
  }
}
