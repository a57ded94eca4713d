// usePresence(room): who is in one room. Joins the room while mounted (shared with
// useRoom through TetherStore.watchRoom), asks the gateway on mount and after every
// reconnection, and applies the room's presence_joined / presence_left events
// (PresenceWatcher in presence.ts).

import { useEffect, useMemo, useSyncExternalStore } from 'react';
import { PresenceWatcher, type PresenceSnapshot } from './presence';
import type { TetherStore } from './store';
import { useTetherStore } from './useWebSocket';

export interface UsePresence extends PresenceSnapshot {
  /** Ask the gateway again. */
  refresh: () => void;
}

/** The presence of `room` (joined while mounted). */
export function usePresence(room: string, store?: TetherStore): UsePresence {
  const s = useTetherStore(store, 'usePresence()');
  const watcher = useMemo(() => new PresenceWatcher(s, room), [s, room]);
  useEffect(() => {
    const release = s.watchRoom(room);
    watcher.start();
    return () => {
      watcher.stop();
      release();
    };
  }, [s, room, watcher]);
  const snapshot = useSyncExternalStore(watcher.subscribe, watcher.getSnapshot, watcher.getSnapshot);
  return useMemo(() => ({ ...snapshot, refresh: watcher.refresh }), [snapshot, watcher]);
}
