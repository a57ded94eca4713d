// Feeds React Native's app state and network reachability into a TetherStore. The RN
// modules are passed in (AppState from 'react-native', NetInfo from
// '@react-native-community/netinfo') so this file imports neither and runs anywhere.

import { NetworkKind } from './bindings';
import type { TetherStore } from './store';

/** The part of React Native's `AppState` used here. */
export interface AppStateModule {
  currentState: string | null;
  addEventListener(type: 'change', listener: (state: string) => void): { remove(): void };
}

/** The part of a NetInfo state used here. */
export interface NetInfoState {
  isConnected: boolean | null;
  isInternetReachable?: boolean | null;
  type: string;
  details?: { isConnectionExpensive?: boolean } | null;
}

/** The part of `@react-native-community/netinfo` used here. */
export interface NetInfoModule {
  addEventListener(listener: (state: NetInfoState) => void): () => void;
}

/** 'active' is the foreground; 'background' and 'inactive' (iOS app switcher) are not. */
export function isForeground(state: string | null): boolean {
  return state === 'active' || state === null;
}

export function networkKind(type: string): NetworkKind {
  switch (type) {
    case 'wifi':
      return NetworkKind.Wifi;
    case 'cellular':
      return NetworkKind.Cellular;
    case 'ethernet':
      return NetworkKind.Ethernet;
    case 'none':
      return NetworkKind.None;
    default:
      return NetworkKind.Other;
  }
}

/** Tells the store about foreground/background changes; returns the unsubscribe. */
export function watchAppState(store: TetherStore, appState: AppStateModule): () => void {
  store.setForeground(isForeground(appState.currentState));
  const subscription = appState.addEventListener('change', (state) => store.setForeground(isForeground(state)));
  return () => subscription.remove();
}

/** Tells the store about network changes; returns the unsubscribe. */
export function watchNetInfo(store: TetherStore, netInfo: NetInfoModule): () => void {
  return netInfo.addEventListener((state) => {
    // isInternetReachable is null while unknown: only a definite false means offline.
    const available = state.isConnected === true && state.isInternetReachable !== false;
    store.setNetwork(available, networkKind(state.type), state.details?.isConnectionExpensive ?? false);
  });
}
