// @tether/react-native: the useWebSocket(), useRoom() and usePresence() hooks over the Tether SDK.

export { TetherStore, TetherException, statusName, toMessage, toException, toRoomPresence } from './store';
export type {
  ConnectionStatusName,
  ErrorKindName,
  Message,
  OutgoingMessage,
  PresenceMember,
  RoomPresence,
  TetherOptions,
  TetherSnapshot,
  TetherStats,
} from './store';
export { TetherProvider, useTetherStore, useWebSocket } from './useWebSocket';
export type { UseWebSocket } from './useWebSocket';
export { useRoom } from './useRoom';
export type { UseRoom, UseRoomOptions } from './useRoom';
export { usePresence } from './usePresence';
export type { UsePresence } from './usePresence';
export { DEFAULT_MAX_ROOM_MESSAGES } from './rooms';
export type { RoomSnapshot } from './rooms';
export { PresenceWatcher, applyPresenceEvent, presenceEvent } from './presence';
export type { PresenceSnapshot } from './presence';
export { watchAppState, watchNetInfo, isForeground, networkKind } from './lifecycle';
export type { AppStateModule, NetInfoModule, NetInfoState } from './lifecycle';
