// The live connection: the typed dialect's WebSocket at `/ws?token=…`
// (API.md §4), kept open with reconnects.
//
// Each attempt: `prepare()` (an HTTP call that also tells a revoked token
// from a network failure: a browser cannot see the 401 of a refused
// WebSocket upgrade), then the socket, then `afterOpen()` (the catch-up).
// The server subscribes the socket to live events before the upgrade
// answers, so whatever `afterOpen` reads and whatever arrives live overlap
// rather than leave a gap. A dropped socket is retried with exponential
// backoff (1 s doubling to 20 s, jittered); `retryNow()` skips the wait.
//
// Requests whose reply comes back on the socket (`getChatMessages` →
// `chatMessages`, `joinChat` → `chatJoined`) are matched to their reply by
// a predicate; an `error` frame is matched by its `request_type` to the
// oldest pending request of that type.

import { Unauthorized } from "./api.js";

const MIN_DELAY = 1000;
const MAX_DELAY = 20000;
const REQUEST_TIMEOUT = 15000;

export class Live {
  /**
   * @param {object} o
   * @param {() => string} o.url          the WebSocket URL
   * @param {() => Promise<void>} o.prepare
   * @param {() => Promise<void>} o.afterOpen
   * @param {(frame: object) => void} o.onFrame   frames no request took
   * @param {(state: string, detail?: object) => void} o.onState
   * @param {() => void} o.onUnauthorized
   */
  constructor(o) {
    this.o = o;
    this.ws = null;
    this.stopped = true;
    this.attempt = 0;
    this.timer = null;
    this.pending = [];
    this.generation = 0;
  }

  start() {
    this.stopped = false;
    this.attempt = 0;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = null;
    this.generation++;
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = null;
      ws.close(1000, "signed out");
    }
    this.failPending(new Error("The connection was closed."));
    this.o.onState("stopped");
  }

  isOpen() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  /** Skips the backoff wait (e.g. the user pressed "Retry now"). */
  retryNow() {
    if (this.stopped || this.ws || !this.timer) return;
    clearTimeout(this.timer);
    this.timer = null;
    this.connect();
  }

  async connect() {
    if (this.stopped) return;
    const gen = ++this.generation;
    this.o.onState("connecting");
    try {
      await this.o.prepare();
    } catch (e) {
      if (gen !== this.generation) return;
      if (e instanceof Unauthorized) return this.o.onUnauthorized();
      return this.retryLater();
    }
    if (gen !== this.generation || this.stopped) return;
    let ws;
    try {
      ws = new WebSocket(this.o.url());
    } catch (e) {
      return this.retryLater();
    }
    this.ws = ws;
    ws.onmessage = (e) => this.onMessage(e.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.failPending(new Error("The connection was lost."));
      if (!this.stopped) this.retryLater();
    };
    ws.onopen = async () => {
      try {
        await this.o.afterOpen();
      } catch (e) {
        if (this.ws !== ws) return;
        if (e instanceof Unauthorized) return this.o.onUnauthorized();
        ws.close(4000, "catch-up failed");
        return;
      }
      if (this.ws !== ws) return;
      this.attempt = 0;
      this.o.onState("live");
    };
  }

  retryLater() {
    if (this.stopped) return;
    const base = Math.min(MAX_DELAY, MIN_DELAY * 2 ** this.attempt);
    const delay = Math.round(base * (0.5 + Math.random() / 2));
    this.attempt++;
    this.o.onState("offline", { retryAt: Date.now() + delay });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, delay);
  }

  /** Sends a frame; false when the socket is not open. */
  send(type, data) {
    if (!this.isOpen()) return false;
    this.ws.send(JSON.stringify({ type, data }));
    return true;
  }

  /** Sends a frame and resolves with the reply frame that `match`es. */
  request(type, data, match) {
    return new Promise((resolve, reject) => {
      if (!this.send(type, data)) {
        reject(new Error("Not connected."));
        return;
      }
      const p = { type, match, resolve, reject };
      p.timer = setTimeout(() => {
        this.pending = this.pending.filter((x) => x !== p);
        reject(new Error("The server did not answer in time."));
      }, REQUEST_TIMEOUT);
      this.pending.push(p);
    });
  }

  failPending(err) {
    const pending = this.pending;
    this.pending = [];
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(err);
    }
  }

  onMessage(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (e) {
      return;
    }
    if (!frame || typeof frame.type !== "string") return;
    const i = this.pending.findIndex((p) =>
      frame.type === "error"
        ? frame.data && frame.data.request_type === p.type
        : p.match(frame),
    );
    if (i >= 0) {
      const [p] = this.pending.splice(i, 1);
      clearTimeout(p.timer);
      if (frame.type === "error") {
        const err = new Error(frame.data.message);
        err.code = frame.data.code;
        p.reject(err);
      } else {
        p.resolve(frame);
      }
      return;
    }
    this.o.onFrame(frame);
  }
}
