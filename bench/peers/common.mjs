// What the three peers share: configuration from the environment, HS256 JWT verification
// (node:crypto, which Bun implements too), the admin key check, name checks and the
// envelope of a published message. Kept to what Tether's own checks do on these paths.

import { createHmac, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";

export const PORT = Number(process.env.PORT ?? 8080);
export const HOST = "127.0.0.1";
export const REDIS_URL = process.env.REDIS_URL || null;
const JWT_SECRET = process.env.JWT_SECRET;
const ADMIN_API_KEY = process.env.ADMIN_API_KEY;
if (!JWT_SECRET || !ADMIN_API_KEY) {
  console.error("JWT_SECRET and ADMIN_API_KEY are required");
  process.exit(2);
}

/** Tether's defaults: clock leeway (JWT_LEEWAY), heartbeat the bench configures. */
const LEEWAY_S = 5;
export const HEARTBEAT_MS = 25_000;
/** Largest frame a client may send (WS_MAX_MESSAGE_BYTES). */
export const MAX_MESSAGE_BYTES = 65_536;

/** `server_<ms>_<6 hex>`, as Tether names its nodes; its first 12 bytes also tag Redis messages. */
export const SERVER_ID = `server_${Date.now()}_${randomBytes(3).toString("hex")}`;
/** A fixed-length tag put before every message this node publishes to Redis, so that it can
 * skip its own messages (it has delivered them locally already), as the Socket.IO adapter does. */
export const NODE_TAG = randomBytes(6).toString("hex");
export const NODE_TAG_BYTES = Buffer.from(NODE_TAG, "latin1");

const APP_RE = /^[A-Za-z0-9._-]{1,64}$/;
const ROOM_RE = /^[A-Za-z0-9._:-]{1,128}$/;
const USER_RE = /^.{1,128}$/su;
const TYPE_RE = /^[a-z0-9_.:-]{1,64}$/;
const RESERVED = new Set(["connection_established", "pong", "room_joined", "room_left", "error"]);

export const validApp = (app) => typeof app === "string" && APP_RE.test(app);
export const validRoom = (room) => typeof room === "string" && ROOM_RE.test(room);
export const validUser = (user) => typeof user === "string" && USER_RE.test(user);

const b64json = (part) => JSON.parse(Buffer.from(part, "base64url").toString("utf8"));

/**
 * Verifies an HS256 JWT with JWT_SECRET. Returns its claims, or an error code string
 * (`invalid_token` / `token_expired`) as Tether answers it.
 */
export function verifyToken(token) {
  if (typeof token !== "string") return "invalid_token";
  const dot1 = token.indexOf(".");
  const dot2 = token.indexOf(".", dot1 + 1);
  if (dot1 <= 0 || dot2 <= dot1 + 1 || token.indexOf(".", dot2 + 1) !== -1) return "invalid_token";
  const mac = createHmac("sha256", JWT_SECRET).update(token.slice(0, dot2)).digest();
  const signature = Buffer.from(token.slice(dot2 + 1), "base64url");
  if (signature.length !== mac.length || !timingSafeEqual(signature, mac)) return "invalid_token";
  let header, claims;
  try {
    header = b64json(token.slice(0, dot1));
    claims = b64json(token.slice(dot1 + 1, dot2));
  } catch {
    return "invalid_token";
  }
  if (header?.alg !== "HS256" || claims === null || typeof claims !== "object") return "invalid_token";
  if (!validUser(claims.sub) || typeof claims.exp !== "number") return "invalid_token";
  const now = Date.now() / 1000;
  if (claims.exp + LEEWAY_S < now) return "token_expired";
  if (typeof claims.nbf === "number" && claims.nbf - LEEWAY_S > now) return "invalid_token";
  return claims;
}

/** Whether the token grants `app` (Tether's `apps` claim). */
export const grantsApp = (claims, app) => Array.isArray(claims.apps) && claims.apps.includes(app);

/** The token of an `Authorization: Bearer <token>` header value. */
export function bearer(value) {
  if (typeof value !== "string") return null;
  const space = value.indexOf(" ");
  if (space < 0 || value.slice(0, space).toLowerCase() !== "bearer") return null;
  return value.slice(space + 1).trim();
}

const ADMIN_BYTES = Buffer.from(ADMIN_API_KEY);
/** Whether an `Authorization` header carries ADMIN_API_KEY (compared in constant time). */
export function isAdmin(header) {
  const key = bearer(header);
  if (key === null) return false;
  const presented = Buffer.from(key);
  return presented.length === ADMIN_BYTES.length && timingSafeEqual(presented, ADMIN_BYTES);
}

/** `{"error":{"code","message"}}`, Tether's error body. */
export const errorBody = (code, message) => JSON.stringify({ error: { code, message } });

/** Checks the body of `POST /v1/send/room` (`user` false) or `/v1/send/user` (`user` true);
 * returns an error message, or null when it is well formed. */
export function checkSend(body, user) {
  if (body === null || typeof body !== "object") return "body must be a JSON object";
  if (!validApp(body.app)) return "app must be 1-64 characters of A-Z a-z 0-9 . _ -";
  if (user ? !validUser(body.userId) : !validRoom(body.room)) {
    return user ? "userId must be 1-128 characters" : "room must be 1-128 characters of A-Z a-z 0-9 . _ : -";
  }
  const message = body.message;
  if (message === null || typeof message !== "object") return "message must be an object";
  if (typeof message.type !== "string" || !TYPE_RE.test(message.type)) return "message.type is malformed";
  if (RESERVED.has(message.type)) return `message.type ${message.type} is reserved for the gateway`;
  if (message.id !== undefined && (typeof message.id !== "string" || message.id.length < 1 || message.id.length > 64)) {
    return "message.id must be 1-64 characters";
  }
  return null;
}

/** The envelope Tether sends for a published message: `{"type","id","room","data","ts"}`
 * (`room` for room messages only). Returns the id and the object; callers encode it once. */
export function envelope(message, room) {
  const id = message.id ?? randomUUID();
  return { id, envelope: { type: message.type, id, room, data: message.data, ts: Date.now() } };
}

/** The data of `connection_established`. */
export const established = (connectionId, claims, app) => ({
  connectionId,
  serverId: SERVER_ID,
  userId: claims.sub,
  app,
  userType: typeof claims.type === "string" ? claims.type : "customer",
  heartbeatInterval: HEARTBEAT_MS,
  replayFrom: null,
  replayCount: 0,
});

/** A request body as a Buffer (Node's http). */
export function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)));
    req.on("error", reject);
  });
}
