// The non-React half of the package: a TetherStore wraps one TetherClient from the
// generated bindings and turns its callbacks into an immutable snapshot that React (or
// anything else) subscribes to. It also converts the SDK's shapes into plain JS ones:
// status names instead of tagged enums, numbers instead of bigints, parsed JSON payloads,
// and one Error class with a `kind`. The hook (useWebSocket.ts) is a thin layer over it.

import { RoomStreams, type RoomSnapshot } from './rooms';
import {
  AppState,
  ClientConfig,
  ConnectionStatus_Tags,
  ErrorKind,
  NetworkKind,
  SendOptions,
  TetherClient,
  type ClientStats,
  type ConnectionStatus,
  type EventListener,
  type InboundMessage,
  type RoomPresence as GeneratedRoomPresence,
  type TetherErrorLike,
  type TokenProvider,
} from './bindings';

/** The connection status as a plain string. */
export type ConnectionStatusName =
  | 'idle'
  | 'connecting'
  | 'connected'
  | 'reconnecting'
  | 'waitingForNetwork'
  | 'suspended'
  | 'disconnected'
  | 'failed';

/** What kind of failure a {@link TetherException} is. */
export type ErrorKindName =
  | 'invalidConfig'
  | 'invalidMessage'
  | 'queueFull'
  | 'storage'
  | 'auth'
  | 'network'
  | 'protocol'
  | 'shutdown';

/** A message from the backend. */
export interface Message {
  type: string;
  id: string;
  /** Inbox sequence (messages sent to the user); absent for room and app messages. */
  seq?: number;
  /** The room, for room messages. */
  room?: string;
  /**
   * Position in its stream, for messages of a room with history or of the app's
   * broadcast stream: strictly increasing within the stream, each delivered once.
   */
  offset?: number;
  /** The payload, parsed from JSON. */
  data: unknown;
  /** When the gateway stamped it (ms since the epoch). */
  ts: number;
}

/** What `useWebSocket()` renders from; replaced (never mutated) on every change. */
export interface TetherSnapshot {
  isConnected: boolean;
  connectionStatus: ConnectionStatusName;
  lastMessage: Message | null;
  /** The last error, as text; cleared when a connection is established. */
  error: string | null;
}

/** One user in a room. */
export interface PresenceMember {
  userId: string;
  /** The user's type (the token's `type`). */
  userType: string;
  /** The user's connections in the room. */
  connections: number;
  /** Their ids, as in the `presence_joined` / `presence_left` events' `connectionId`. */
  connectionIds: string[];
}

/** Who is in a room, on every gateway node (see {@link TetherStore.getRoomPresence}). */
export interface RoomPresence {
  room: string;
  /** Distinct users in the room. */
  users: number;
  /** Their connections in the room. */
  connections: number;
  /** The users, ordered by user id; at most 1,000 (see `truncated`). */
  members: PresenceMember[];
  /** Whether `members` stops short of `users`. */
  truncated: boolean;
}

/** What {@link TetherStore.sendMessage} takes. */
export interface OutgoingMessage {
  type: string;
  /** Any JSON value; `null` when left out. */
  data?: unknown;
  /** Latest wins among the queued messages with this key (see `sendMessage`). */
  replaceKey?: string;
  /** Dropped instead of sent once queued this long, in ms (see `sendMessage`). */
  ttlMs?: number;
}

/** Counters and gauges, as numbers. */
export interface TetherStats {
  connectionStatus: ConnectionStatusName;
  reconnects: number;
  sent: number;
  acked: number;
  received: number;
  duplicatesDropped: number;
  /** Times a stream lost messages for good (see {@link TetherStore.onStreamReset}). */
  streamResets: number;
  /** Messages dropped unsent: older than `maxMessageAgeS` or their `ttlMs`. */
  expired: number;
  /** Messages dropped unsent because a newer one with the same `replaceKey` came. */
  replaced: number;
  queued: number;
  queuedBytes: number;
  oldestQueuedAgeMs: number | null;
  lastRttMs: number | null;
  connectedForMs: number | null;
  lastError: string | null;
}

export interface TetherOptions {
  /** `wss://host/ws` */
  url: string;
  app: string;
  /** Stable per install; the app stores it. */
  deviceId: string;
  /** A directory the app owns, for the SDK's on-disk queue. */
  storageDir: string;
  /**
   * Returns the current token, or null when the user is signed out; may be `async` (a
   * refresh over the network, e.g. Firebase's `getIdToken()`). Called before every
   * connection attempt, after the gateway refuses a token, and shortly before the
   * connection's token runs out (it then goes to the gateway without reconnecting);
   * never twice at once, unless an abandoned call goes on after its signal aborted. A call
   * still pending after 30 s is abandoned (that attempt fails and is retried) and `signal`
   * aborts, as it does when the store shuts down: pass it on to `fetch`. Throwing (or
   * rejecting) means "no token for now": the error's text reaches `error` and the SDK
   * retries with backoff.
   */
  tokens: (
    signal?: AbortSignal,
  ) => string | null | undefined | Promise<string | null | undefined>;
  connectTimeoutMs?: number;
  backoffBaseMs?: number;
  backoffCapMs?: number;
  backgroundGraceMs?: number;
  backoffResetAfterMs?: number;
  maxQueuedMessages?: number;
  maxQueuedBytes?: number;
  maxMessageBytes?: number;
  maxMessageAgeS?: number;
  /** PEM of the only CA to trust (private deployments, tests). */
  tlsRootCaPem?: string;
  /**
   * Other addresses of the same gateway cluster (another load balancer or DNS name, the
   * same Redis behind it), tried in turn after a network failure, a timeout or a refusal
   * that is not about the client (5xx, 404, 421); back to `url` 10 minutes after leaving
   * it, when the network returns and on foreground. At most 8, no repeats, not `url`.
   */
  fallbackUrls?: string[];
}

/** The one error type: `kind` says what to do, `message` what happened. */
export class TetherException extends Error {
  readonly kind: ErrorKindName;

  constructor(kind: ErrorKindName, message: string) {
    super(message);
    this.name = 'TetherException';
    this.kind = kind;
  }
}

const statusNames: Record<ConnectionStatus_Tags, ConnectionStatusName> = {
  [ConnectionStatus_Tags.Idle]: 'idle',
  [ConnectionStatus_Tags.Connecting]: 'connecting',
  [ConnectionStatus_Tags.Connected]: 'connected',
  [ConnectionStatus_Tags.Reconnecting]: 'reconnecting',
  [ConnectionStatus_Tags.WaitingForNetwork]: 'waitingForNetwork',
  [ConnectionStatus_Tags.Suspended]: 'suspended',
  [ConnectionStatus_Tags.Disconnected]: 'disconnected',
  [ConnectionStatus_Tags.Failed]: 'failed',
};

const errorKindNames: Record<ErrorKind, ErrorKindName> = {
  [ErrorKind.InvalidConfig]: 'invalidConfig',
  [ErrorKind.InvalidMessage]: 'invalidMessage',
  [ErrorKind.QueueFull]: 'queueFull',
  [ErrorKind.Storage]: 'storage',
  [ErrorKind.Auth]: 'auth',
  [ErrorKind.Network]: 'network',
  [ErrorKind.Protocol]: 'protocol',
  [ErrorKind.Shutdown]: 'shutdown',
};

export function statusName(status: ConnectionStatus): ConnectionStatusName {
  return statusNames[status.tag];
}

function isTetherError(e: unknown): e is TetherErrorLike {
  return (
    typeof e === 'object' &&
    e !== null &&
    typeof (e as TetherErrorLike).kind === 'function' &&
    typeof (e as TetherErrorLike).message === 'function'
  );
}

/**
 * The SDK's error as a {@link TetherException}; anything else unchanged. The bindings
 * throw the SDK's error object wrapped in a `UniffiThrownObject` (as `inner`).
 */
export function toException(e: unknown): unknown {
  if (e instanceof TetherException) return e;
  const inner = typeof e === 'object' && e !== null ? (e as { inner?: unknown }).inner : undefined;
  const error = isTetherError(e) ? e : isTetherError(inner) ? inner : undefined;
  return error ? new TetherException(errorKindNames[error.kind()], error.message()) : e;
}

function errorText(e: TetherErrorLike): string {
  return `${errorKindNames[e.kind()]}: ${e.message()}`;
}

function toNumber(value: bigint | undefined): number | null {
  return value === undefined ? null : Number(value);
}

export function toMessage(m: InboundMessage): Message {
  let data: unknown;
  try {
    data = JSON.parse(m.dataJson);
  } catch {
    // The gateway only forwards JSON; keep the text rather than lose the message.
    data = m.dataJson;
  }
  const message: Message = { type: m.type, id: m.id, data, ts: Number(m.ts) };
  if (m.seq !== undefined) message.seq = Number(m.seq);
  if (m.room !== undefined) message.room = m.room;
  if (m.offset !== undefined) message.offset = Number(m.offset);
  return message;
}

function toStats(s: ClientStats): TetherStats {
  return {
    connectionStatus: statusName(s.status),
    reconnects: Number(s.reconnects),
    sent: Number(s.sent),
    acked: Number(s.acked),
    received: Number(s.received),
    duplicatesDropped: Number(s.duplicatesDropped),
    streamResets: Number(s.streamResets),
    expired: Number(s.expired),
    replaced: Number(s.replaced),
    queued: s.queued,
    queuedBytes: Number(s.queuedBytes),
    oldestQueuedAgeMs: toNumber(s.oldestQueuedAgeMs),
    lastRttMs: toNumber(s.lastRttMs),
    connectedForMs: toNumber(s.connectedForMs),
    lastError: s.lastError ?? null,
  };
}

export function toRoomPresence(p: GeneratedRoomPresence): RoomPresence {
  return {
    room: p.room,
    users: Number(p.users),
    connections: Number(p.connections),
    members: p.members.map((m) => ({
      userId: m.userId,
      userType: m.userType,
      connections: m.connections,
      connectionIds: [...m.connectionIds],
    })),
    truncated: p.truncated,
  };
}

function clientConfig(o: TetherOptions): ClientConfig {
  const big = (v: number | undefined) => (v === undefined ? undefined : BigInt(v));
  const overrides = {
    connectTimeoutMs: big(o.connectTimeoutMs),
    backoffBaseMs: big(o.backoffBaseMs),
    backoffCapMs: big(o.backoffCapMs),
    backgroundGraceMs: big(o.backgroundGraceMs),
    backoffResetAfterMs: big(o.backoffResetAfterMs),
    maxQueuedMessages: o.maxQueuedMessages,
    maxQueuedBytes: big(o.maxQueuedBytes),
    maxMessageBytes: o.maxMessageBytes,
    maxMessageAgeS: big(o.maxMessageAgeS),
    tlsRootCaPem: o.tlsRootCaPem,
    fallbackUrls: o.fallbackUrls === undefined ? undefined : [...o.fallbackUrls],
  };
  const set = Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined));
  return ClientConfig.create({ url: o.url, app: o.app, deviceId: o.deviceId, storageDir: o.storageDir, ...set });
}

type Listener = () => void;

/** One connection, observable. Create one per app (per storage directory). */
export class TetherStore {
  private readonly client: TetherClient;
  private snapshot: TetherSnapshot = {
    isConnected: false,
    connectionStatus: 'idle',
    lastMessage: null,
    error: null,
  };
  private readonly listeners = new Set<Listener>();
  private readonly messageHandlers = new Set<(m: Message) => void>();
  private readonly ackHandlers = new Set<(id: string) => void>();
  private readonly replacedHandlers = new Set<(id: string, by: string) => void>();
  private readonly expiredHandlers = new Set<(id: string) => void>();
  private readonly streamResetHandlers = new Set<(room: string | undefined) => void>();
  private readonly rooms = new RoomStreams(
    (room) => this.joinRoom(room),
    (room) => this.leaveRoom(room),
    (f) => this.guard(f),
  );

  /** @throws TetherException (`invalidConfig`, `storage`) */
  constructor(options: TetherOptions) {
    // Every SDK callback hands over to one method of the store (see "SDK events" below):
    // a callback the SDK gains is one line here and one method there.
    const listener: EventListener = {
      onStatus: (status) => this.handleStatus(status),
      onMessage: (m) => this.handleMessage(toMessage(m)),
      onAck: (id) => this.notify(this.ackHandlers, (h) => h(id)),
      onError: (e) => this.update({ error: errorText(e) }),
      // Both limits (ttlMs, maxMessageAgeS) are the app's own: not an error, as on Kotlin
      // and Swift. The handlers and getStats().expired report it.
      onExpired: (id) => this.notify(this.expiredHandlers, (h) => h(id)),
      // Latest wins was asked for: not an error.
      onReplaced: (id, by) => this.notify(this.replacedHandlers, (h) => h(id, by)),
      // A stream lost messages for good: the watched room's snapshot shows it.
      onStreamReset: (room) => this.recordStreamReset(room),
    };
    const tokens: TokenProvider = {
      fetchToken: async (asyncOpts?: { signal: AbortSignal }) => {
        let token: unknown;
        try {
          token = await options.tokens(asyncOpts?.signal);
        } catch (e) {
          // The generated bindings read `.message`: anything thrown becomes an Error.
          throw e instanceof Error ? e : new Error(String(e));
        }
        if (token === null || token === undefined) return undefined;
        if (typeof token !== 'string') {
          throw new Error(`tokens() gave a ${typeof token}, not a string`);
        }
        return token;
      },
    };
    try {
      this.client = new TetherClient(clientConfig(options), listener, tokens);
    } catch (e) {
      throw toException(e);
    }
  }

  /** For `useSyncExternalStore`: called after every snapshot change. */
  subscribe = (listener: Listener): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  /** The current snapshot (the same object until something changes). */
  getSnapshot = (): TetherSnapshot => this.snapshot;

  /** Every message, in order (the snapshot only keeps the last). */
  onMessage(handler: (message: Message) => void): () => void {
    this.messageHandlers.add(handler);
    return () => this.messageHandlers.delete(handler);
  }

  /** Ids the gateway acknowledged (as returned by {@link sendMessage}). */
  onAck(handler: (id: string) => void): () => void {
    this.ackHandlers.add(handler);
    return () => this.ackHandlers.delete(handler);
  }

  /**
   * Messages dropped unsent because a newer one (`by`) with the same `replaceKey` was
   * queued while they waited.
   */
  onReplaced(handler: (id: string, by: string) => void): () => void {
    this.replacedHandlers.add(handler);
    return () => this.replacedHandlers.delete(handler);
  }

  /**
   * Messages dropped unsent because they grew older than `maxMessageAgeS` or their
   * `ttlMs`. Neither sets `error`: both are limits the app chose. They will not be sent
   * (again; one written to an earlier connection that ended before its ack may have
   * reached the gateway all the same).
   */
  onExpired(handler: (id: string) => void): () => void {
    this.expiredHandlers.add(handler);
    return () => this.expiredHandlers.delete(handler);
  }

  /**
   * Stream resets: the gateway could not recover the messages a stream missed (the app
   * was away longer than the room's history holds, or the history was lost), so the app
   * must refetch that room's state; delivery goes on with the messages that follow.
   * `room` is the room, or undefined for the app's broadcast stream. Called before the
   * first message after the gap reaches {@link onMessage}.
   */
  onStreamReset(handler: (room: string | undefined) => void): () => void {
    this.streamResetHandlers.add(handler);
    return () => this.streamResetHandlers.delete(handler);
  }

  /**
   * Records a stream reset (the SDK's `onStreamReset` callback calls this): a watched
   * room's snapshot shows `streamReset: true` until {@link clearStreamReset}, and the
   * {@link onStreamReset} handlers hear it (also for `undefined`, the app's stream).
   */
  recordStreamReset = (room: string | undefined): void => {
    if (room !== undefined) this.rooms.streamReset(room);
    this.notify(this.streamResetHandlers, (h) => h(room));
  };

  /** The app has refetched `room`: its snapshot's `streamReset` goes back to false. */
  clearStreamReset = (room: string): void => this.rooms.clearStreamReset(room);

  /**
   * Joins `room` and keeps its messages (at most `maxMessages`, newest last) for
   * {@link getRoomSnapshot}; returns the release. Watches of one room share the join:
   * the last release leaves the room. `useRoom()` and `usePresence()` use this.
   * @throws TetherException on a bad room name.
   */
  watchRoom = (room: string, maxMessages?: number): (() => void) => this.rooms.watch(room, maxMessages);

  /** A room's messages and stream state (the same object until it changes). */
  getRoomSnapshot = (room: string): RoomSnapshot => this.rooms.snapshot(room);

  /** Called after every change of {@link getRoomSnapshot}(room); returns the unsubscribe. */
  subscribeRoom = (room: string, listener: Listener): (() => void) => this.rooms.subscribe(room, listener);

  connect = (): void => this.client.connect();
  disconnect = (): void => this.client.disconnect();
  reconnect = (): void => this.client.reconnect();

  /**
   * Queues a message; resolves with its id once it is on disk (sent now or after the
   * next connect). Rejects with a {@link TetherException}. For messages whose value is
   * the newest one or that are worthless late:
   * - `replaceKey`: latest wins: queued messages with the same key that are not on their
   *   way yet (written to the socket, waiting for the ack) are dropped and reported to
   *   {@link onReplaced}; e.g. `'location'`. 1 to 256 bytes.
   * - `ttlMs`: dropped (reported to {@link onExpired}) instead of sent once
   *   queued this long; `maxMessageAgeS` still applies when shorter. A whole number, at
   *   least 1.
   */
  sendMessage = async ({ type, data, replaceKey, ttlMs }: OutgoingMessage): Promise<string> => {
    const json = JSON.stringify(data ?? null);
    try {
      if (ttlMs !== undefined && !(Number.isSafeInteger(ttlMs) && ttlMs >= 1)) {
        throw new TetherException('invalidMessage', `ttlMs must be a whole number of at least 1, got ${ttlMs}`);
      }
      if (replaceKey === undefined && ttlMs === undefined) {
        return await this.client.sendMessage(type, json);
      }
      const options = SendOptions.create({
        replaceKey,
        ttlMs: ttlMs === undefined ? undefined : BigInt(ttlMs),
      });
      return await this.client.sendMessageWith(type, json, options);
    } catch (e) {
      throw toException(e);
    }
  };

  /**
   * Takes back a queued message that is not on its way yet: true when it was removed and
   * will not be sent again; false when it is no longer queued (acked, expired, replaced,
   * cancelled) or written to the open connection and waiting for the ack.
   */
  cancelMessage = async (id: string): Promise<boolean> => {
    try {
      return await this.client.cancelMessage(id);
    } catch (e) {
      throw toException(e);
    }
  };

  /** @throws TetherException on a bad room name. */
  joinRoom = (room: string): void => this.call(() => this.client.joinRoom(room));
  /** @throws TetherException on a bad room name. */
  leaveRoom = (room: string): void => this.call(() => this.client.leaveRoom(room));

  /**
   * Who is in `room` (a room this client has joined), on every gateway node. Calls for
   * the same room at the same time share one request. Rejects with a
   * {@link TetherException}: `network` when not connected, when the connection drops or
   * after 10 s without an answer; `invalidMessage` for a bad room name; `auth` when the
   * room was not joined (join it first); `protocol` when the gateway refused for now
   * (rate limited, unavailable); `shutdown`.
   */
  getRoomPresence = async (room: string): Promise<RoomPresence> => {
    try {
      return toRoomPresence(await this.client.roomPresence(room));
    } catch (e) {
      throw toException(e);
    }
  };

  getStats = (): TetherStats => toStats(this.client.stats());

  /** What NetInfo says (see lifecycle.ts). */
  setNetwork(available: boolean, kind: NetworkKind = NetworkKind.Other, expensive = false): void {
    this.client.setNetwork({ available, kind: available ? kind : NetworkKind.None, expensive });
  }

  /** Whether the app is in the foreground (see lifecycle.ts). */
  setForeground(foreground: boolean): void {
    this.client.setAppState(foreground ? AppState.Foreground : AppState.Background);
  }

  /** Stops the client and releases its storage directory. */
  async shutdown(): Promise<void> {
    await this.client.shutdown();
    this.client.uniffiDestroy();
    this.listeners.clear();
    this.messageHandlers.clear();
    this.ackHandlers.clear();
    this.replacedHandlers.clear();
    this.expiredHandlers.clear();
    this.streamResetHandlers.clear();
    this.rooms.clear();
  }

  // SDK events (the EventListener above hands each one over).

  private handleStatus(status: ConnectionStatus): void {
    const name = statusName(status);
    this.update({
      connectionStatus: name,
      isConnected: name === 'connected',
      ...(name === 'connected' ? { error: null } : {}),
      ...(status.tag === ConnectionStatus_Tags.Failed ? { error: `failed: ${status.inner.reason}` } : {}),
    });
  }

  private handleMessage(message: Message): void {
    this.update({ lastMessage: message });
    this.rooms.message(message);
    this.notify(this.messageHandlers, (h) => h(message));
  }

  private notify<H>(handlers: Set<H>, call: (handler: H) => void): void {
    for (const handler of handlers) this.guard(() => call(handler));
  }

  private call(f: () => void): void {
    try {
      f();
    } catch (e) {
      throw toException(e);
    }
  }

  private update(change: Partial<TetherSnapshot>): void {
    this.snapshot = { ...this.snapshot, ...change };
    for (const listener of this.listeners) this.guard(listener);
  }

  private guard(f: () => void): void {
    // An app handler that throws must not break delivery to the others, nor make the
    // SDK treat the callback as failed.
    try {
      f();
    } catch (e) {
      console.error('@tether/react-native: a handler threw', e);
    }
  }
}
