// useRoom() and usePresence() mounted with react-test-renderer (effects run, in
// StrictMode) over stores connected to a real gateway: the room is joined while a
// component is mounted and left on unmount (the gateway's /v1/presence says so), room
// messages reach the room's component and no other, stream resets show until cleared,
// and presence follows other clients joining and leaving through presence events.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createElement } from 'react';
import { TetherProvider, TetherStore, usePresence, useRoom, type UsePresence, type UseRoom } from '../src/index';
import { Gateway, newUser, testOptions, waitFor, waitForAsync } from './gateway';
import { mount } from './render';

async function connected(store: TetherStore): Promise<void> {
  store.connect();
  await waitFor('connected', () => (store.getSnapshot().isConnected ? true : undefined));
}

describe('useRoom', () => {
  let gateway: Gateway;
  before(async () => {
    gateway = await Gateway.start();
  });
  after(async () => {
    await gateway.stop();
  });

  test('joins while mounted, shows the room\'s messages, leaves on unmount', async () => {
    const user = newUser('use-room');
    const room = `orders:${Date.now()}`;
    const store = new TetherStore(testOptions(gateway, user));
    const seen: Record<string, UseRoom> = {};
    function Room({ name, slot }: { name: string; slot: string }) {
      seen[slot] = useRoom(name);
      return null;
    }
    try {
      await connected(store);
      store.joinRoom('elsewhere'); // joined by the app itself: its messages are not the hook's
      assert.deepEqual(await gateway.presenceUsers(room), [], 'not in the room before mounting');

      const first = mount(createElement(TetherProvider, { store }, createElement(Room, { name: room, slot: 'a' })));
      await waitForAsync('the hook\'s join', async () =>
        (await gateway.presenceUsers(room)).includes(user) ? true : undefined);
      await waitForAsync('the app\'s own join', async () =>
        (await gateway.presenceUsers('elsewhere')).includes(user) ? true : undefined);

      await gateway.sendToRoom('elsewhere', 'chat', { n: 0 });
      await gateway.sendToUser(user, 'note', { n: 0 });
      for (const n of [1, 2]) await gateway.sendToRoom(room, 'chat', { n });
      await waitFor('2 room messages rendered', () => (seen.a?.messages.length === 2 ? true : undefined));
      await waitFor('the other messages reached the store', () =>
        store.getStats().received >= 4 ? true : undefined);
      assert.deepEqual(seen.a!.messages.map((m) => [m.room, m.data]), [[room, { n: 1 }], [room, { n: 2 }]]);
      assert.deepEqual(seen.a!.lastMessage?.data, { n: 2 });
      assert.deepEqual([seen.a!.streamReset, seen.a!.recovered, seen.a!.resets], [false, true, 0]);

      // A second component on the same room shares the join: unmounting it keeps the room.
      const second = mount(createElement(TetherProvider, { store }, createElement(Room, { name: room, slot: 'b' })));
      await waitFor('the second component rendered', () => (seen.b?.messages.length === 2 ? true : undefined));
      second.unmount();
      await gateway.sendToRoom(room, 'chat', { n: 3 });
      await waitFor('a message after the second unmount', () => (seen.a!.messages.length === 3 ? true : undefined));

      first.unmount();
      await waitForAsync('the leave on unmount', async () =>
        (await gateway.presenceUsers(room)).includes(user) ? undefined : true);
      assert.deepEqual(await gateway.presenceUsers('elsewhere'), [user], 'the app\'s own room stays joined');
      assert.equal(store.getRoomSnapshot(room).messages.length, 0);
    } finally {
      await store.shutdown();
    }
  });

  test('a stream reset of the room shows until clearStreamReset()', async () => {
    const user = newUser('room-reset');
    const room = `feed:${Date.now()}`;
    const store = new TetherStore(testOptions(gateway, user));
    let seen: UseRoom | undefined;
    function Room() {
      seen = useRoom(room);
      return null;
    }
    const heard: Array<string | undefined> = [];
    store.onStreamReset((r) => heard.push(r));
    try {
      await connected(store);
      const mounted = mount(createElement(TetherProvider, { store }, createElement(Room)));
      await waitForAsync('joined', async () => ((await gateway.presenceUsers(room)).includes(user) ? true : undefined));
      await gateway.sendToRoom(room, 'chat', { n: 1 });
      await waitFor('a message', () => (seen?.messages.length === 1 ? true : undefined));

      store.recordStreamReset('some-other-room');
      store.recordStreamReset(undefined); // the app's broadcast stream
      store.recordStreamReset(room);
      await waitFor('the reset rendered', () => (seen?.streamReset ? true : undefined));
      assert.deepEqual([seen!.streamReset, seen!.recovered, seen!.resets], [true, false, 1]);
      assert.equal(seen!.messages.length, 1, 'the messages received before the reset stay');
      assert.deepEqual(heard, ['some-other-room', undefined, room]);

      seen!.clearStreamReset();
      await waitFor('the reset cleared', () => (seen?.streamReset === false ? true : undefined));
      assert.deepEqual([seen!.recovered, seen!.resets], [true, 1]);
      mounted.unmount();
    } finally {
      await store.shutdown();
    }
  });
});

describe('usePresence', () => {
  let gateway: Gateway;
  before(async () => {
    gateway = await Gateway.start(0, { WS_PRESENCE_EVENTS: 'team:*' });
  });
  after(async () => {
    await gateway.stop();
  });

  test('asks on mount, then follows joins and leaves through presence events', async () => {
    const room = `team:${Date.now()}`;
    const alice = newUser('alice');
    const bob = newUser('bob');
    const aliceStore = new TetherStore(testOptions(gateway, alice));
    const bobStore = new TetherStore(testOptions(gateway, bob));
    let seen: UsePresence | undefined;
    let renders = 0;
    function Presence() {
      seen = usePresence(room);
      renders += 1;
      return null;
    }
    const users = () => seen?.presence?.members.map((m) => m.userId).join(',');
    try {
      await connected(aliceStore);
      const mounted = mount(createElement(TetherProvider, { store: aliceStore }, createElement(Presence)));
      await waitFor('alice alone', () => (users() === alice ? true : undefined));
      assert.deepEqual([seen!.presence!.users, seen!.presence!.connections, seen!.error], [1, 1, null]);

      bobStore.joinRoom(room);
      await connected(bobStore);
      const both = [alice, bob].sort().join(',');
      await waitFor(`both (now ${users()})`, () => (users() === both ? true : undefined));
      assert.deepEqual([seen!.presence!.users, seen!.presence!.connections], [2, 2]);

      await bobStore.shutdown();
      await waitFor(`alice alone again (now ${users()})`, () => (users() === alice ? true : undefined));
      assert.deepEqual([seen!.presence!.users, seen!.presence!.connections], [1, 1]);
      assert.ok(renders > 2);

      mounted.unmount();
      await waitForAsync('the leave on unmount', async () =>
        (await gateway.presenceUsers(room)).length === 0 ? true : undefined);
    } finally {
      await aliceStore.shutdown();
      await bobStore.shutdown().catch(() => {});
    }
  });
});
