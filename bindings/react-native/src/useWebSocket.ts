// The React half: a context carrying the app's TetherStore, and useWebSocket(), which
// renders from the store's snapshot through useSyncExternalStore (no extra state, no
// effects) and hands out the store's actions.

import { createContext, createElement, useContext, useMemo, useSyncExternalStore, type ReactNode } from 'react';
import type { ConnectionStatusName, Message, OutgoingMessage, RoomPresence, TetherStats, TetherStore } from './store';

const TetherContext = createContext<TetherStore | null>(null);

/** Makes `store` the one `useWebSocket()` uses below it. */
export function TetherProvider({ store, children }: { store: TetherStore; children?: ReactNode }) {
  return createElement(TetherContext.Provider, { value: store }, children);
}

export interface UseWebSocket {
  isConnected: boolean;
  connectionStatus: ConnectionStatusName;
  lastMessage: Message | null;
  error: string | null;
  /** Resolves with the message id once it is queued on disk. */
  sendMessage: (message: OutgoingMessage) => Promise<string>;
  /** Takes back a queued message not on its way yet; whether it was removed. */
  cancelMessage: (id: string) => Promise<boolean>;
  reconnect: () => void;
  getStats: () => TetherStats;
  joinRoom: (room: string) => void;
  leaveRoom: (room: string) => void;
  /** Who is in a room this client has joined; rejects with a TetherException. */
  getRoomPresence: (room: string) => Promise<RoomPresence>;
}

/** `store`, or the nearest TetherProvider's; throws naming `hook` when there is neither. */
export function useTetherStore(store: TetherStore | undefined, hook = 'useTetherStore()'): TetherStore {
  const fromContext = useContext(TetherContext);
  const s = store ?? fromContext;
  if (!s) throw new Error(`${hook} needs a <TetherProvider store={...}> above it (or a store argument)`);
  return s;
}

/** The connection of the nearest TetherProvider (or of `store` when given). */
export function useWebSocket(store?: TetherStore): UseWebSocket {
  const s = useTetherStore(store, 'useWebSocket()');
  const snapshot = useSyncExternalStore(s.subscribe, s.getSnapshot, s.getSnapshot);
  return useMemo(
    () => ({
      ...snapshot,
      sendMessage: s.sendMessage,
      cancelMessage: s.cancelMessage,
      reconnect: s.reconnect,
      getStats: s.getStats,
      joinRoom: s.joinRoom,
      leaveRoom: s.leaveRoom,
      getRoomPresence: s.getRoomPresence,
    }),
    [snapshot, s],
  );
}
