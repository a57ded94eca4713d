// useRoom(room): one room's messages. Joins the room while the component is mounted
// (TetherStore.watchRoom: watches of one room share the join) and leaves it on unmount;
// renders the room's snapshot through useSyncExternalStore.

import { useCallback, useEffect, useMemo, useSyncExternalStore } from 'react';
import type { RoomSnapshot } from './rooms';
import type { TetherStore } from './store';
import { useTetherStore } from './useWebSocket';

export interface UseRoomOptions {
  /** Messages kept, newest last (default 100). Read when the room is first watched. */
  maxMessages?: number;
  /** The store; default: the nearest TetherProvider's. */
  store?: TetherStore;
}

export interface UseRoom extends RoomSnapshot {
  /** After refetching the room's history: `streamReset` back to false. */
  clearStreamReset: () => void;
}

/** The messages of `room`, joined while mounted. */
export function useRoom(room: string, options: UseRoomOptions = {}): UseRoom {
  const store = useTetherStore(options.store, 'useRoom()');
  const { maxMessages } = options;
  // The join is an effect (not render): a render may be thrown away without cleanup.
  useEffect(() => store.watchRoom(room, maxMessages), [store, room, maxMessages]);
  const subscribe = useCallback((listener: () => void) => store.subscribeRoom(room, listener), [store, room]);
  const read = useCallback(() => store.getRoomSnapshot(room), [store, room]);
  const snapshot = useSyncExternalStore(subscribe, read, read);
  const clearStreamReset = useCallback(() => store.clearStreamReset(room), [store, room]);
  return useMemo(() => ({ ...snapshot, clearStreamReset }), [snapshot, clearStreamReset]);
}
