// Peer: the gateway a team writes by hand on Node with `ws` (+ bufferutil/utf-8-validate)
// and, across nodes, `ioredis`. Speaks Tether's join/room subset of the wire protocol
// (docs/protocol.md §2-5) and its publishing API (§9, send/room and send/user).
//
// Cross-node: one publisher and one subscriber connection per process; a Redis channel per
// room and per user (`r:<app>:<room>`, `u:<app>:<user>`), subscribed while this node has a
// member. A publish is delivered to local members at once and PUBLISHed to the channel
// with this node's tag in front; every node delivers what it receives, skipping its own.

import { createServer } from "node:http";
import { WebSocketServer, WebSocket } from "ws";
import {
  HOST, PORT, REDIS_URL, MAX_MESSAGE_BYTES, NODE_TAG, NODE_TAG_BYTES, SERVER_ID,
  bearer, checkSend, envelope, errorBody, established, grantsApp, isAdmin, readBody,
  validApp, validRoom, verifyToken,
} from "./common.mjs";

/** Channel -> local members (sockets). */
const members = new Map();
const TEXT = { binary: false };
let nextConnection = 0;

let pub = null;
let sub = null;
if (REDIS_URL) {
  const { Redis } = await import("ioredis");
  pub = new Redis(REDIS_URL);
  sub = new Redis(REDIS_URL);
  sub.on("messageBuffer", (channel, message) => {
    if (NODE_TAG_BYTES.compare(message, 0, NODE_TAG_BYTES.length) === 0) return; // ours
    deliver(channel.toString(), message.subarray(NODE_TAG_BYTES.length));
  });
  await Promise.all([pub.ping(), sub.ping()]);
}

/** Sends one encoded frame (a Buffer, encoded once) to every local member of `channel`. */
function deliver(channel, frame) {
  const set = members.get(channel);
  if (set === undefined) return 0;
  for (const ws of set) ws.send(frame, TEXT);
  return set.size;
}

/** Adds `ws` to `channel`; resolves once the node receives the channel's messages. */
function join(channel, ws) {
  let set = members.get(channel);
  if (set === undefined) {
    set = new Set();
    set.ready = sub === null ? null : sub.subscribe(channel);
    members.set(channel, set);
  }
  set.add(ws);
  return set.ready;
}

function leave(channel, ws) {
  const set = members.get(channel);
  if (set === undefined || !set.delete(ws) || set.size > 0) return;
  members.delete(channel);
  if (sub !== null) sub.unsubscribe(channel).catch(() => {});
}

function send(ws, type, data) {
  ws.send(JSON.stringify({ type, data }));
}

function onMessage(raw, isBinary) {
  if (isBinary) return this.close(1003);
  let msg;
  try {
    msg = JSON.parse(raw);
  } catch {
    return this.close(1007);
  }
  const type = msg?.type;
  if (type === "ping") {
    send(this, "pong", { ts: msg.data?.ts, serverTs: Date.now() });
  } else if (type === "join_room" || type === "leave_room") {
    const room = msg.data?.room;
    if (!validRoom(room)) {
      return send(this, "error", { code: "invalid_room", message: "room must be 1-128 characters of A-Z a-z 0-9 . _ : -", ref: type });
    }
    const channel = `r:${this.app}:${room}`;
    if (type === "leave_room") {
      if (this.rooms?.delete(channel)) leave(channel, this);
      return send(this, "room_left", { room });
    }
    (this.rooms ??= new Set()).add(channel);
    const ready = join(channel, this);
    if (ready === null) return send(this, "room_joined", { room });
    ready.then(
      () => this.readyState === WebSocket.OPEN && send(this, "room_joined", { room }),
      () => send(this, "error", { code: "unavailable", message: "subscribe failed", ref: type }),
    );
  }
  // Anything else (acks, app messages) is outside the subset the peers implement: ignored.
}

function ignore() {}

function onClose() {
  leave(this.channel, this);
  if (this.rooms) for (const channel of this.rooms) leave(channel, this);
}

const wss = new WebSocketServer({
  noServer: true,
  perMessageDeflate: false,
  clientTracking: false,
  maxPayload: MAX_MESSAGE_BYTES,
});

function refuse(socket, status, code, message) {
  const body = errorBody(code, message);
  socket.end(
    `HTTP/1.1 ${status} ${status === 401 ? "Unauthorized" : status === 403 ? "Forbidden" : status === 404 ? "Not Found" : "Bad Request"}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

async function onConnection(ws, claims, app) {
  ws.app = app;
  ws.rooms = null;
  ws.channel = `u:${app}:${claims.sub}`;
  ws.on("message", onMessage);
  ws.on("close", onClose);
  ws.on("error", ignore);
  const ready = join(ws.channel, ws);
  if (ready !== null) {
    try {
      await ready;
    } catch {
      return ws.close(1011);
    }
  }
  if (ws.readyState === WebSocket.OPEN) {
    send(ws, "connection_established", established(`${SERVER_ID}-${++nextConnection}`, claims, app));
  }
}

function json(res, status, body) {
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}

async function publish(req, res, toUser) {
  if (!isAdmin(req.headers.authorization)) return json(res, 401, errorBody("unauthorized", "missing or wrong API key"));
  let body;
  try {
    body = JSON.parse(await readBody(req));
  } catch {
    return json(res, 400, errorBody("invalid_request", "body is not JSON"));
  }
  const problem = checkSend(body, toUser);
  if (problem !== null) return json(res, 400, errorBody("invalid_request", problem));
  const { id, envelope: env } = envelope(body.message, toUser ? undefined : body.room);
  const channel = toUser ? `u:${body.app}:${body.userId}` : `r:${body.app}:${body.room}`;
  const text = JSON.stringify(env);
  const frame = Buffer.from(text); // encoded once, the same bytes for every member
  const local = deliver(channel, frame);
  if (pub !== null) pub.publish(channel, NODE_TAG + text).catch(() => {});
  json(res, 200, JSON.stringify({ id, delivered: pub === null ? local : null }));
}

const server = createServer((req, res) => {
  if (req.method === "GET" && req.url === "/health") {
    const ok = pub === null || (pub.status === "ready" && sub.status === "ready");
    return json(res, ok ? 200 : 503, ok ? '{"status":"healthy"}' : '{"status":"unhealthy"}');
  }
  if (req.method === "POST" && req.url === "/v1/send/room") return void publish(req, res, false);
  if (req.method === "POST" && req.url === "/v1/send/user") return void publish(req, res, true);
  json(res, 404, errorBody("not_found", "no such route"));
});

server.on("upgrade", (req, socket, head) => {
  socket.on("error", () => {});
  const q = req.url.indexOf("?");
  if ((q < 0 ? req.url : req.url.slice(0, q)) !== "/ws") return refuse(socket, 404, "not_found", "no such route");
  const query = new URLSearchParams(q < 0 ? "" : req.url.slice(q + 1));
  const claims = verifyToken(bearer(req.headers.authorization) ?? query.get("token"));
  if (typeof claims === "string") return refuse(socket, 401, claims, "the token was refused");
  const app = query.get("app");
  if (!validApp(app)) return refuse(socket, 400, "invalid_params", "app must be 1-64 characters of A-Z a-z 0-9 . _ -");
  if (!grantsApp(claims, app)) return refuse(socket, 403, "app_forbidden", "the token does not grant this app");
  wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, claims, app));
});

server.listen(PORT, HOST);
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
