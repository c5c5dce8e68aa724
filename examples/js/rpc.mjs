// A JSON-RPC 2.0 client for `rpc` servers, in plain JavaScript: Node 18 or
// newer, or a browser. No packages: `fetch` for HTTP, `WebSocket` for
// streams (Node 22+, or Node 20-21 with `--experimental-websocket`).
//
//   import { HttpClient, WsClient, RpcError } from "./rpc.mjs";
//
//   const calc = new HttpClient("http://127.0.0.1:7000/rpc");
//   await calc.call("add", [5, 3]);              // 8, by position
//   await calc.call("div", { a: 7, b: 0 });      // throws RpcError, code -32000, data "DivisionByZero"
//
//   const ws = await WsClient.connect("ws://127.0.0.1:7000/rpc");
//   for await (const n of ws.stream("count", [5])) console.log(n);
//
// docs/JSON.md has the whole mapping: names, params, results, error codes,
// the deadline header.

/** An error response: `code` says what happened (docs/JSON.md lists them),
 * `data` holds a method's own error value (code -32000). */
export class RpcError extends Error {
  constructor({ code, message, data }) {
    super(message);
    this.name = "RpcError";
    this.code = code;
    this.data = data;
  }
}

/** The codes a server answers with, by name. */
export const codes = Object.freeze({
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  INTERNAL_ERROR: -32603,
  APPLICATION_ERROR: -32000,
  DEADLINE_EXCEEDED: -32001,
  FAILED: -32002,
  OVERLOADED: -32003,
  SHUTTING_DOWN: -32004,
  INTERRUPTED: -32005,
  TOO_LARGE: -32006,
  NEEDS_STREAM: -32007,
  UNAUTHENTICATED: -32008,
  PERMISSION_DENIED: -32009,
});

function outcome(response) {
  if (response.error) throw new RpcError(response.error);
  return response.result;
}

/** Calls over HTTP: one `POST` per call or batch, on kept-alive connections. */
export class HttpClient {
  /** `url`: the server's JSON-RPC path, as `http://host:port/rpc`.
   * `timeout`: each call's deadline in milliseconds (the server's default, 30 s, if unset). */
  constructor(url, { timeout } = {}) {
    this.url = url;
    this.timeout = timeout;
    this.nextId = 1;
  }

  async post(body, timeout) {
    const headers = { "content-type": "application/json" };
    const deadline = timeout ?? this.timeout;
    if (deadline !== undefined) headers["rpc-timeout"] = `${deadline}ms`;
    const response = await fetch(this.url, { method: "POST", headers, body: JSON.stringify(body) });
    if (response.status === 204) return undefined;
    const text = await response.text();
    try {
      return JSON.parse(text);
    } catch {
      throw new Error(`HTTP ${response.status} from ${this.url}: ${text}`);
    }
  }

  /** Calls `method` (`"Service.method"`, or `"method"` when one service has
   * it) with `params`: an array in the trait's order, or an object by name.
   * Resolves to the result; rejects with an `RpcError`. */
  async call(method, params = [], { timeout } = {}) {
    const id = this.nextId++;
    return outcome(await this.post({ jsonrpc: "2.0", id, method, params }, timeout));
  }

  /** Calls `method` without waiting for an answer (none is sent). */
  async notify(method, params = []) {
    await this.post({ jsonrpc: "2.0", method, params });
  }

  /** Sends `calls` (`[method, params]` pairs) in one request. Resolves to
   * their outcomes in the same order: `{ result }` or `{ error: RpcError }`. */
  async batch(calls) {
    const first = this.nextId;
    this.nextId += calls.length;
    const body = calls.map(([method, params], i) => ({ jsonrpc: "2.0", id: first + i, method, params }));
    const responses = await this.post(body);
    if (!Array.isArray(responses)) throw new RpcError(responses.error);
    const byId = new Map(responses.map((response) => [response.id, response]));
    return calls.map((_, i) => {
      const response = byId.get(first + i);
      return response.error ? { error: new RpcError(response.error) } : { result: response.result };
    });
  }

  /** The server's OpenRPC document: every method, its params and result. */
  discover() {
    return this.call("rpc.discover");
  }
}

/** Calls over one WebSocket: many at once, and streams. */
export class WsClient {
  /** Opens a WebSocket to `url` (`ws://host:port/rpc`; an `http://` URL is
   * turned into its `ws://` twin). */
  static connect(url) {
    if (typeof WebSocket === "undefined") {
      throw new Error("this JavaScript has no WebSocket: use Node 22+, or Node 20-21 with --experimental-websocket");
    }
    const socket = new WebSocket(url.replace(/^http/, "ws"));
    return new Promise((resolve, reject) => {
      socket.addEventListener("open", () => resolve(new WsClient(socket)), { once: true });
      socket.addEventListener("error", () => reject(new Error(`could not open a WebSocket to ${url}`)), { once: true });
    });
  }

  constructor(socket) {
    this.socket = socket;
    this.nextId = 1;
    this.calls = new Map(); // id -> { resolve, reject, item }
    socket.addEventListener("message", (event) => this.receive(JSON.parse(event.data)));
    socket.addEventListener("close", () => {
      for (const call of this.calls.values()) call.reject(new Error("the WebSocket closed"));
      this.calls.clear();
    });
  }

  receive(message) {
    for (const response of Array.isArray(message) ? message : [message]) {
      if (response.method === "rpc.item") {
        this.calls.get(response.params.call)?.item(response.params.item);
        continue;
      }
      const call = this.calls.get(response.id);
      if (!call) continue;
      this.calls.delete(response.id);
      if (response.error) call.reject(new RpcError(response.error));
      else call.resolve(response.result);
    }
  }

  start(method, params, item) {
    const id = this.nextId++;
    const done = new Promise((resolve, reject) => this.calls.set(id, { resolve, reject, item }));
    this.socket.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
    return { id, done };
  }

  /** Calls `method`; resolves to its result, rejects with an `RpcError`. */
  call(method, params = []) {
    return this.start(method, params, () => {}).done;
  }

  /** Calls a method that returns a stream: an async iterator of its items.
   * Leaving the loop early cancels the call on the server. */
  async *stream(method, params = []) {
    const queue = [];
    let wake = () => {};
    const { id, done } = this.start(method, params, (item) => {
      queue.push(item);
      wake();
    });
    let finished = false;
    let failure;
    done.then(
      () => { finished = true; wake(); },
      (err) => { finished = true; failure = err; wake(); },
    );
    try {
      while (true) {
        if (queue.length > 0) {
          yield queue.shift();
        } else if (finished) {
          if (failure) throw failure;
          return;
        } else {
          await new Promise((resolve) => { wake = resolve; });
        }
      }
    } finally {
      if (!finished) {
        this.calls.delete(id);
        this.socket.send(JSON.stringify({ jsonrpc: "2.0", method: "rpc.cancel", params: { call: id } }));
      }
    }
  }

  close() {
    this.socket.close();
  }
}
