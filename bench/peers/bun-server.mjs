// Peer: Bun's `Bun.serve` (uWebSockets inside) with its built-in topic pub/sub. Speaks
// Tether's join/room subset of the wire protocol (docs/protocol.md §2-5) and its publishing
// API (§9, send/room and send/user). Each connection subscribes to its personal topic and
// to the rooms it joins; a publish is one `server.publish(topic, text)`, which uWS frames
// and writes to every subscriber in native code.
//
// Cross-node: Bun's built-in Redis client (`Bun.RedisClient`), one publisher and one
// subscriber connection per process; a Redis channel per topic (`r:<app>:<room>`,
// `u:<app>:<user>`) subscribed while this node has a member. A publish goes to local
// subscribers at once and is PUBLISHed with this node's tag in front; every node feeds
// what it receives into `server.publish`, skipping its own.

import {
  HOST, PORT, REDIS_URL, MAX_MESSAGE_BYTES, NODE_TAG, SERVER_ID,
  bearer, checkSend, envelope, errorBody, established, grantsApp, isAdmin,
  validApp, validRoom, verifyToken,
} from "./common.mjs";

let server;
let nextConnection = 0;

let pub = null;
let sub = null;
/** With Redis: topic -> { members: local subscriber count, ready: subscribe promise }. */
const channels = new Map();
if (REDIS_URL) {
  pub = new Bun.RedisClient(REDIS_URL);
  sub = new Bun.RedisClient(REDIS_URL);
  await Promise.all([pub.connect(), sub.connect()]);
}

function fromRedis(message, channel) {
  if (message.startsWith(NODE_TAG)) return; // ours, delivered locally already
  server.publish(channel, message.slice(NODE_TAG.length));
}

/** Subscribes `ws` to `topic`; with Redis, resolves once the node receives the topic. */
function join(ws, topic) {
  ws.subscribe(topic);
  if (sub === null) return null;
  let channel = channels.get(topic);
  if (channel === undefined) {
    channel = { members: 0, ready: sub.subscribe(topic, fromRedis) };
    channels.set(topic, channel);
  }
  channel.members += 1;
  return channel.ready;
}

function release(topic) {
  const channel = channels.get(topic);
  if (channel === undefined || --channel.members > 0) return;
  channels.delete(topic);
  sub.unsubscribe(topic).catch(() => {});
}

const send = (ws, type, data) => ws.send(JSON.stringify({ type, data }));

const json = (status, body) =>
  new Response(body, { status, headers: { "Content-Type": "application/json" } });

async function publish(req, toUser) {
  if (!isAdmin(req.headers.get("authorization"))) return json(401, errorBody("unauthorized", "missing or wrong API key"));
  let body;
  try {
    body = await req.json();
  } catch {
    return json(400, errorBody("invalid_request", "body is not JSON"));
  }
  const problem = checkSend(body, toUser);
  if (problem !== null) return json(400, errorBody("invalid_request", problem));
  const { id, envelope: env } = envelope(body.message, toUser ? undefined : body.room);
  const topic = toUser ? `u:${body.app}:${body.userId}` : `r:${body.app}:${body.room}`;
  const text = JSON.stringify(env);
  server.publish(topic, text);
  if (pub !== null) pub.publish(topic, NODE_TAG + text).catch(() => {});
  return json(200, JSON.stringify({ id, delivered: pub === null ? server.subscriberCount(topic) : null }));
}

function upgrade(req, url) {
  const claims = verifyToken(bearer(req.headers.get("authorization")) ?? url.searchParams.get("token"));
  if (typeof claims === "string") return json(401, errorBody(claims, "the token was refused"));
  const app = url.searchParams.get("app");
  if (!validApp(app)) return json(400, errorBody("invalid_params", "app must be 1-64 characters of A-Z a-z 0-9 . _ -"));
  if (!grantsApp(claims, app)) return json(403, errorBody("app_forbidden", "the token does not grant this app"));
  // `rooms` is only kept with Redis (to release channels on close); Bun itself drops a
  // closed socket's topic subscriptions.
  const data = { user: claims.sub, type: claims.type, app, topic: `u:${app}:${claims.sub}`, rooms: null };
  if (server.upgrade(req, { data })) return undefined;
  return json(400, errorBody("invalid_params", "not a WebSocket upgrade"));
}

server = Bun.serve({
  hostname: HOST,
  port: PORT,
  fetch(req) {
    const url = new URL(req.url);
    const path = url.pathname;
    if (path === "/ws" && req.method === "GET") return upgrade(req, url);
    if (path === "/health" && req.method === "GET") return json(200, '{"status":"healthy"}');
    if (path === "/v1/send/room" && req.method === "POST") return publish(req, false);
    if (path === "/v1/send/user" && req.method === "POST") return publish(req, true);
    return json(404, errorBody("not_found", "no such route"));
  },
  websocket: {
    perMessageDeflate: false,
    maxPayloadLength: MAX_MESSAGE_BYTES,
    // Tether's WS_CONNECTION_TIMEOUT as the harness sets it (120 s); also Bun's default.
    idleTimeout: 120,
    async open(ws) {
      const { user, type, app, topic } = ws.data;
      const ready = join(ws, topic);
      if (ready !== null) {
        try {
          await ready;
        } catch {
          return ws.close(1011);
        }
      }
      send(ws, "connection_established", established(`${SERVER_ID}-${++nextConnection}`, { sub: user, type }, app));
    },
    message(ws, raw) {
      if (typeof raw !== "string") return ws.close(1003);
      let msg;
      try {
        msg = JSON.parse(raw);
      } catch {
        return ws.close(1007);
      }
      const type = msg?.type;
      if (type === "ping") {
        send(ws, "pong", { ts: msg.data?.ts, serverTs: Date.now() });
      } else if (type === "join_room" || type === "leave_room") {
        const room = msg.data?.room;
        if (!validRoom(room)) {
          return send(ws, "error", { code: "invalid_room", message: "room must be 1-128 characters of A-Z a-z 0-9 . _ : -", ref: type });
        }
        const topic = `r:${ws.data.app}:${room}`;
        if (type === "leave_room") {
          if (ws.isSubscribed(topic)) {
            ws.unsubscribe(topic);
            if (sub !== null && ws.data.rooms.delete(topic)) release(topic);
          }
          return send(ws, "room_left", { room });
        }
        if (ws.isSubscribed(topic)) return send(ws, "room_joined", { room });
        const ready = join(ws, topic);
        if (ready === null) return send(ws, "room_joined", { room });
        (ws.data.rooms ??= new Set()).add(topic);
        ready.then(
          () => ws.readyState === 1 && send(ws, "room_joined", { room }),
          () => send(ws, "error", { code: "unavailable", message: "subscribe failed", ref: type }),
        );
      }
      // Anything else (acks, app messages) is outside the subset the peers implement: ignored.
    },
    close(ws) {
      if (sub === null) return;
      release(ws.data.topic);
      if (ws.data.rooms) for (const topic of ws.data.rooms) release(topic);
    },
  },
});

for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
