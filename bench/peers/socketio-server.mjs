// Peer: Socket.IO v4 (WebSocket transport only) and, across nodes, its Redis adapter
// (`@socket.io/redis-adapter` with `redis` clients, the standard `createAdapter` setup).
// Socket.IO has its own wire format, so the load generator speaks it (bench/src/client.rs).
//
// Auth: the usual Socket.IO middleware, checking the HS256 JWT from the connect packet's
// `auth` payload (or the handshake query) before the socket joins the namespace. Each socket
// joins a personal room for its user; `join_room` joins a room and answers `room_joined`.
// Publishes are `io.to(room).emit("message", envelope)`: the adapter encodes the packet
// (and its WebSocket frame) once for all members, and, with Redis, publishes it once to the
// other nodes.

import { createServer } from "node:http";
import { Server } from "socket.io";
import {
  HOST, PORT, REDIS_URL, MAX_MESSAGE_BYTES,
  checkSend, envelope, errorBody, isAdmin, readBody, validRoom, verifyToken,
} from "./common.mjs";

/** The personal room of a user (`@` is not allowed in the room names clients may join). */
const userRoom = (user) => `@${user}`;

function json(res, status, body) {
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}

let io;

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
  const room = toUser ? userRoom(body.userId) : body.room;
  io.to(room).emit("message", env);
  const delivered = REDIS_URL ? null : (io.of("/").adapter.rooms.get(room)?.size ?? 0);
  json(res, 200, JSON.stringify({ id, delivered }));
}

const httpServer = createServer((req, res) => {
  if (req.method === "GET" && req.url === "/health") return json(res, 200, '{"status":"healthy"}');
  if (req.method === "POST" && req.url === "/v1/send/room") return void publish(req, res, false);
  if (req.method === "POST" && req.url === "/v1/send/user") return void publish(req, res, true);
  json(res, 404, errorBody("not_found", "no such route"));
});

io = new Server(httpServer, {
  transports: ["websocket"],
  serveClient: false,
  perMessageDeflate: false,
  httpCompression: false,
  maxHttpBufferSize: MAX_MESSAGE_BYTES,
});

// Socket.IO's own advice for memory (docs "Memory usage"): drop the HTTP request each
// Engine.IO socket keeps once the handshake is done.
io.engine.on("connection", (rawSocket) => {
  rawSocket.request = null;
});

if (REDIS_URL) {
  const { createClient } = await import("redis");
  const { createAdapter } = await import("@socket.io/redis-adapter");
  const pubClient = createClient({ url: REDIS_URL });
  const subClient = pubClient.duplicate();
  pubClient.on("error", (e) => console.error("redis", e.message));
  subClient.on("error", (e) => console.error("redis", e.message));
  await Promise.all([pubClient.connect(), subClient.connect()]);
  io.adapter(createAdapter(pubClient, subClient));
}

io.use((socket, next) => {
  const claims = verifyToken(socket.handshake.auth?.token ?? socket.handshake.query.token);
  if (typeof claims === "string") return next(new Error(claims));
  socket.data.user = claims.sub;
  next();
});

io.on("connection", (socket) => {
  socket.join(userRoom(socket.data.user));
  socket.on("join_room", (room) => {
    if (!validRoom(room)) return socket.emit("error", { code: "invalid_room", message: "room must be 1-128 characters of A-Z a-z 0-9 . _ : -", ref: "join_room" });
    socket.join(room);
    socket.emit("room_joined", { room });
  });
  socket.on("leave_room", (room) => {
    if (!validRoom(room)) return;
    socket.leave(room);
    socket.emit("room_left", { room });
  });
});

httpServer.listen(PORT, HOST);
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
