// Who is in one room, kept current for usePresence(): asks the gateway
// (TetherStore.getRoomPresence) on start and after every reconnection, then applies the
// room's presence_joined / presence_left events (sent in rooms the gateway lists in
// WS_PRESENCE_EVENTS), keyed by connection id. Events that arrive while a question is on
// its way are applied after its answer. Plain TypeScript, restartable (React's strict
// mode starts, stops and starts again).

import type { Message, PresenceMember, RoomPresence, TetherStore } from './store';
import { TetherException } from './store';

/** What `usePresence(room)` renders from; replaced (never mutated) on every change. */
export interface PresenceSnapshot {
  room: string;
  /** The last answer with the events since applied; null until the first answer. */
  presence: RoomPresence | null;
  /** Whether a question is on its way. */
  loading: boolean;
  /** Why the last question failed (cleared by the next answer). */
  error: TetherException | null;
}

interface PresenceEvent {
  type: 'presence_joined' | 'presence_left';
  userId: string;
  userType: string;
  connectionId: string;
}

/** A presence event of `room` in `m`, or undefined. */
export function presenceEvent(m: Message, room: string): PresenceEvent | undefined {
  if (m.room !== room || (m.type !== 'presence_joined' && m.type !== 'presence_left')) return undefined;
  const d = m.data as Partial<Record<'userId' | 'userType' | 'connectionId', unknown>> | null;
  if (!d || typeof d.userId !== 'string' || typeof d.connectionId !== 'string') return undefined;
  return {
    type: m.type,
    userId: d.userId,
    userType: typeof d.userType === 'string' ? d.userType : '',
    connectionId: d.connectionId,
  };
}

/**
 * `presence` with one event applied (a new object; the same one when the event changes
 * nothing: a join already counted, a leave of a connection not listed). Members stay
 * ordered by user id. With a `truncated` answer a join of a user not listed adds them.
 */
export function applyPresenceEvent(presence: RoomPresence, e: PresenceEvent): RoomPresence {
  const holder = presence.members.find((m) => m.connectionIds.includes(e.connectionId));
  if (e.type === 'presence_joined') {
    if (holder) return presence;
    const member = presence.members.find((m) => m.userId === e.userId);
    const changed: PresenceMember = member
      ? { ...member, connections: member.connections + 1, connectionIds: [...member.connectionIds, e.connectionId] }
      : { userId: e.userId, userType: e.userType, connections: 1, connectionIds: [e.connectionId] };
    const others = presence.members.filter((m) => m.userId !== e.userId);
    const members = [...others, changed].sort((a, b) => (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0));
    return { ...presence, members, users: presence.users + (member ? 0 : 1), connections: presence.connections + 1 };
  }
  if (!holder) return presence;
  const ids = holder.connectionIds.filter((id) => id !== e.connectionId);
  const members =
    ids.length === 0
      ? presence.members.filter((m) => m !== holder)
      : presence.members.map((m) => (m === holder ? { ...m, connections: m.connections - 1, connectionIds: ids } : m));
  return {
    ...presence,
    members,
    users: presence.users - (ids.length === 0 ? 1 : 0),
    connections: presence.connections - 1,
  };
}

/** How long a question refused with `auth` ("join the room first") is retried. */
const JOIN_WAIT_MS = 10_000;

export class PresenceWatcher {
  private snapshot: PresenceSnapshot;
  private readonly listeners = new Set<() => void>();
  private stops: Array<() => void> = [];
  /** Bumped by every question and by stop(): an answer to an older one is dropped. */
  private generation = 0;
  private pending: PresenceEvent[] | null = null;
  private retry: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly store: TetherStore,
    readonly room: string,
  ) {
    this.snapshot = { room, presence: null, loading: false, error: null };
  }

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getSnapshot = (): PresenceSnapshot => this.snapshot;

  /** Asks now, and after every reconnection; applies events. The room must be joined. */
  start(): void {
    if (this.stops.length > 0) return;
    let connected = this.store.getSnapshot().isConnected;
    this.stops.push(
      this.store.subscribe(() => {
        const now = this.store.getSnapshot().isConnected;
        if (now && !connected) this.refresh();
        connected = now;
      }),
      this.store.onMessage((m) => {
        const e = presenceEvent(m, this.room);
        if (!e) return;
        if (this.pending) this.pending.push(e);
        else if (this.snapshot.presence) this.set({ presence: applyPresenceEvent(this.snapshot.presence, e) });
      }),
    );
    if (connected) this.refresh();
  }

  stop(): void {
    for (const stop of this.stops) stop();
    this.stops = [];
    this.generation += 1;
    this.pending = null;
    clearTimeout(this.retry);
    if (this.snapshot.loading) this.set({ loading: false });
  }

  /** Asks the gateway again (the answer replaces `presence`). */
  refresh = (): void => {
    if (this.stops.length === 0) return;
    clearTimeout(this.retry);
    const generation = ++this.generation;
    this.pending = [];
    this.set({ loading: true });
    void this.ask(generation, Date.now() + JOIN_WAIT_MS);
  };

  private async ask(generation: number, joinDeadline: number): Promise<void> {
    try {
      let presence = await this.store.getRoomPresence(this.room);
      if (generation !== this.generation) return;
      for (const e of this.pending ?? []) presence = applyPresenceEvent(presence, e);
      this.pending = null;
      this.set({ presence, loading: false, error: null });
    } catch (e) {
      if (generation !== this.generation) return;
      // Right after joinRoom the join may still be on its way: ask again shortly.
      if (e instanceof TetherException && e.kind === 'auth' && Date.now() < joinDeadline) {
        this.retry = setTimeout(() => void this.ask(generation, joinDeadline), 50);
        return;
      }
      this.pending = null;
      const error = e instanceof TetherException ? e : new TetherException('protocol', String(e));
      this.set({ loading: false, error });
    }
  }

  private set(change: Partial<PresenceSnapshot>): void {
    this.snapshot = { ...this.snapshot, ...change };
    for (const listener of this.listeners) {
      try {
        listener();
      } catch (e) {
        console.error('@tether/react-native: a presence listener threw', e);
      }
    }
  }
}
