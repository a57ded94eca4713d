// Per-room state for useRoom(): which rooms are watched (and how many times, so two
// screens on one room share one join), the messages each watched room received, and
// whether its stream was reset (the gateway could not replay what it missed, so the app
// must refetch). Plain TypeScript; TetherStore owns one and feeds it.

import type { Message } from './store';

/** What `useRoom(room)` renders from; replaced (never mutated) on every change. */
export interface RoomSnapshot {
  room: string;
  /** The room's messages since it was first watched, oldest first (at most `maxMessages`). */
  messages: readonly Message[];
  /** The newest of them, or null. */
  lastMessage: Message | null;
  /**
   * True after the gateway could not recover the messages this room's stream missed (a
   * reconnection that could not replay them): `messages` has a gap, refetch the room's
   * history and then call `clearStreamReset()`.
   */
  streamReset: boolean;
  /** `!streamReset`: every message since the watch began (or the last clear) arrived. */
  recovered: boolean;
  /** Stream resets recorded for this room since it was first watched. */
  resets: number;
}

/** How many messages a watched room keeps unless told otherwise. */
export const DEFAULT_MAX_ROOM_MESSAGES = 100;

interface Watched {
  watchers: number;
  maxMessages: number;
  snapshot: RoomSnapshot;
}

/** The watched rooms of one store. `join`/`leave` are the store's. */
export class RoomStreams {
  private readonly rooms = new Map<string, Watched>();
  // Apart from `rooms`: React may subscribe before or after the watch begins.
  private readonly listeners = new Map<string, Set<() => void>>();

  constructor(
    private readonly join: (room: string) => void,
    private readonly leave: (room: string) => void,
    private readonly guard: (f: () => void) => void,
  ) {}

  /**
   * Watches `room`: joins it on the first watch, records its messages, and returns the
   * release, which leaves the room when the last watcher releases it. Throws what `join`
   * throws (a bad room name), watching nothing then.
   */
  watch(room: string, maxMessages = DEFAULT_MAX_ROOM_MESSAGES): () => void {
    if (!(Number.isSafeInteger(maxMessages) && maxMessages >= 1)) {
      throw new RangeError(`maxMessages must be a whole number of at least 1, got ${maxMessages}`);
    }
    let watched = this.rooms.get(room);
    if (!watched) {
      this.join(room);
      watched = { watchers: 0, maxMessages, snapshot: emptyRoom(room) };
      this.rooms.set(room, watched);
      this.notify(room);
    }
    watched.watchers += 1;
    watched.maxMessages = Math.max(watched.maxMessages, maxMessages);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const w = this.rooms.get(room);
      if (!w) return;
      w.watchers -= 1;
      if (w.watchers === 0) {
        this.rooms.delete(room);
        this.leave(room);
        this.notify(room);
      }
    };
  }

  /** The room's snapshot (the same object until it changes); an empty one when not watched. */
  snapshot(room: string): RoomSnapshot {
    return this.rooms.get(room)?.snapshot ?? emptyRooms.get(room);
  }

  /** Called after every change of `room`'s snapshot; returns the unsubscribe. */
  subscribe(room: string, listener: () => void): () => void {
    let set = this.listeners.get(room);
    if (!set) {
      set = new Set();
      this.listeners.set(room, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0 && this.listeners.get(room) === set) this.listeners.delete(room);
    };
  }

  /** A message from the SDK: kept when it belongs to a watched room. */
  message(message: Message): void {
    if (message.room === undefined) return;
    const watched = this.rooms.get(message.room);
    if (!watched) return;
    const messages = [...watched.snapshot.messages, message];
    if (messages.length > watched.maxMessages) messages.splice(0, messages.length - watched.maxMessages);
    this.update(message.room, watched, { messages, lastMessage: message });
  }

  /** The SDK could not recover `room`'s missed messages. False when it is not watched. */
  streamReset(room: string): boolean {
    const watched = this.rooms.get(room);
    if (!watched) return false;
    this.update(room, watched, { streamReset: true, recovered: false, resets: watched.snapshot.resets + 1 });
    return true;
  }

  /** The app has refetched `room`: `streamReset` back to false. */
  clearStreamReset(room: string): void {
    const watched = this.rooms.get(room);
    if (watched?.snapshot.streamReset) this.update(room, watched, { streamReset: false, recovered: true });
  }

  /** Forgets every room (the store shut down); leaves none (the client is gone). */
  clear(): void {
    this.rooms.clear();
    this.listeners.clear();
  }

  private update(room: string, watched: Watched, change: Partial<RoomSnapshot>): void {
    watched.snapshot = { ...watched.snapshot, ...change };
    this.notify(room);
  }

  private notify(room: string): void {
    for (const listener of this.listeners.get(room) ?? []) this.guard(listener);
  }
}

function emptyRoom(room: string): RoomSnapshot {
  return { room, messages: [], lastMessage: null, streamReset: false, recovered: true, resets: 0 };
}

/** One empty snapshot per room name, so an unwatched room's snapshot is stable too. */
const emptyRooms = {
  cache: new Map<string, RoomSnapshot>(),
  get(room: string): RoomSnapshot {
    let s = this.cache.get(room);
    if (!s) {
      s = emptyRoom(room);
      if (this.cache.size > 1000) this.cache.clear();
      this.cache.set(room, s);
    }
    return s;
  },
};
