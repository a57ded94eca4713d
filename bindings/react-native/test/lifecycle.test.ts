// React Native's AppState and NetInfo (stand-ins with the same shape) feeding a real
// client: background suspends after the grace period, active reconnects, no network
// waits, and the network coming back reconnects.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { TetherStore, isForeground, networkKind, watchAppState, watchNetInfo, type AppStateModule, type NetInfoModule, type NetInfoState } from '../src/index';
import { NetworkKind } from '../src/generated/index';
import { Gateway, newUser, testOptions, waitFor } from './gateway';

class FakeAppState implements AppStateModule {
  currentState: string | null = 'active';
  private listener: ((state: string) => void) | null = null;
  addEventListener(_type: 'change', listener: (state: string) => void) {
    this.listener = listener;
    return { remove: () => { this.listener = null; } };
  }
  set(state: string) {
    this.currentState = state;
    this.listener?.(state);
  }
  get subscribed() {
    return this.listener !== null;
  }
}

class FakeNetInfo implements NetInfoModule {
  private listener: ((state: NetInfoState) => void) | null = null;
  addEventListener(listener: (state: NetInfoState) => void) {
    this.listener = listener;
    return () => { this.listener = null; };
  }
  set(state: NetInfoState) {
    this.listener?.(state);
  }
}

let gateway: Gateway;
before(async () => {
  gateway = await Gateway.start();
});
after(async () => {
  await gateway.stop();
});

test('the mappings from React Native values', () => {
  assert.equal(isForeground('active'), true);
  assert.equal(isForeground('background'), false);
  assert.equal(isForeground('inactive'), false);
  assert.equal(networkKind('wifi'), NetworkKind.Wifi);
  assert.equal(networkKind('cellular'), NetworkKind.Cellular);
  assert.equal(networkKind('bluetooth'), NetworkKind.Other);
});

test('AppState: background suspends after the grace period, active connects again', async () => {
  const store = new TetherStore(testOptions(gateway, newUser('appstate'), { backgroundGraceMs: 300 }));
  const appState = new FakeAppState();
  const stop = watchAppState(store, appState);
  try {
    store.connect();
    await waitFor('connected', () => (store.getSnapshot().isConnected ? true : undefined));
    appState.set('background');
    await waitFor('suspended', () => (store.getSnapshot().connectionStatus === 'suspended' ? true : undefined));
    appState.set('active');
    await waitFor('connected again', () => (store.getSnapshot().isConnected ? true : undefined));
    assert.equal(store.getStats().reconnects, 1);
  } finally {
    stop();
    assert.equal(appState.subscribed, false);
    await store.shutdown();
  }
});

test('NetInfo: no network waits without retrying, the network coming back reconnects', async () => {
  const store = new TetherStore(testOptions(gateway, newUser('netinfo')));
  const netInfo = new FakeNetInfo();
  const stop = watchNetInfo(store, netInfo);
  try {
    store.connect();
    await waitFor('connected', () => (store.getSnapshot().isConnected ? true : undefined));
    netInfo.set({ isConnected: false, isInternetReachable: false, type: 'none' });
    await waitFor('waiting', () => (store.getSnapshot().connectionStatus === 'waitingForNetwork' ? true : undefined));
    netInfo.set({ isConnected: true, isInternetReachable: null, type: 'cellular', details: { isConnectionExpensive: true } });
    await waitFor('connected again', () => (store.getSnapshot().isConnected ? true : undefined));
    assert.equal(store.getStats().reconnects, 1);
  } finally {
    stop();
    await store.shutdown();
  }
});
