// @tether/react-native: the useWebSocket() hook over the Tether SDK.

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
export { TetherProvider, useWebSocket } from './useWebSocket';
export type { UseWebSocket } from './useWebSocket';
export { watchAppState, watchNetInfo, isForeground, networkKind } from './lifecycle';
export type { AppStateModule, NetInfoModule, NetInfoState } from './lifecycle';
