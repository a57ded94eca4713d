// Stream recovery through TetherStore and useRoom() against a real gateway whose `feed:*`
// rooms and app broadcasts keep a history of 3 messages: stream messages carry their
// offset; after a short disconnect the room's missed messages arrive once, in offset
// order, and the hook stays `recovered`; after a longer one the SDK's onStreamReset
// reaches the hook (`streamReset`, `resets`) and the store's handlers, and delivery goes
// on after the gap; the app's broadcast stream resets with an undefined room.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createElement } from 'react';
import { TetherProvider, TetherStore, useRoom, type ConnectionStatusName, type UseRoom } from '../src/index';
import { Gateway, newUser, testOptions, waitFor, waitForAsync, type Published } from './gateway';
import { mount, type Mounted } from './render';

/** Messages each stream keeps (WS_ROOM_HISTORY_SIZE, WS_APP_HISTORY_SIZE). */
const HISTORY = 3;

async function status(store: TetherStore, name: ConnectionStatusName): Promise<void> {
  await waitFor(name, () => (store.getSnapshot().connectionStatus === name ? true : undefined));
}

/** What a failed assertion should show: the client's state and the gateway's log. */
function context(store: TetherStore, gateway: Gateway): string {
  return `\nsnapshot ${JSON.stringify(store.getSnapshot())}\nstats ${JSON.stringify(store.getStats())}\ngateway log:\n${gateway.logTail(30)}`;
}

describe('streams', () => {
  let gateway: Gateway;
  before(async () => {
    gateway = await Gateway.start(0, {
      WS_ROOM_HISTORY: 'feed:*',
      WS_ROOM_HISTORY_SIZE: String(HISTORY),
      WS_APP_HISTORY_SIZE: String(HISTORY),
    });
  });
  after(async () => {
    await gateway.stop();
  });

  /** Until the gateway no longer counts anyone in `room` (the socket closes after the status says so). */
  async function away(room: string): Promise<void> {
    await waitForAsync(`nobody in ${room}`, async () => ((await gateway.presenceUsers(room)).length === 0 ? true : undefined));
  }

  interface RoomClient {
    room: string;
    store: TetherStore;
    view: () => UseRoom;
    heard: Array<string | undefined>;
    mounted: Mounted;
    first: Published;
  }

  /**
   * A store with useRoom(room) mounted (before connecting: the hook's one join goes out
   * with the connection), connected, and the room's first message rendered.
   */
  async function roomClient(name: string): Promise<RoomClient> {
    const room = `feed:${name}-${Date.now()}`;
    const store = new TetherStore(testOptions(gateway, newUser(name)));
    let seen: UseRoom | undefined;
    function Room() {
      seen = useRoom(room);
      return null;
    }
    const heard: Array<string | undefined> = [];
    store.onStreamReset((r) => heard.push(r));
    const mounted = mount(createElement(TetherProvider, { store }, createElement(Room)));
    store.connect();
    await status(store, 'connected');
    // Publish until the gateway counts the client in the room (the join follows the
    // handshake); the ones before reach no one.
    const first = await waitForAsync('the room joined', async () => {
      const sent = await gateway.publishToRoom(room, 'tick', { n: 0 });
      return sent.delivered === 1 ? sent : undefined;
    });
    await waitFor('the first message rendered', () => (seen?.messages.length === 1 ? true : undefined));
    return { room, store, view: () => seen!, heard, mounted, first };
  }

  test('after a short disconnect the missed messages arrive once, in offset order, and the room stays recovered', async () => {
    const { room, store, view, heard, mounted, first } = await roomClient('recover');
    try {
      assert.equal(typeof first.offset, 'number', 'a room with history numbers its messages');
      assert.equal(view().messages[0]!.offset, first.offset);

      store.disconnect();
      await status(store, 'disconnected');
      await away(room);
      const missed: Published[] = [];
      for (let n = 1; n < HISTORY; n++) missed.push(await gateway.publishToRoom(room, 'tick', { n }));
      assert.deepEqual(missed.map((m) => m.delivered), [0, 0]);
      store.connect();
      await waitFor('the missed messages', () => (view().messages.length === HISTORY ? true : undefined));
      const offsets = view().messages.map((m) => m.offset);
      assert.deepEqual(offsets, [first.offset, ...missed.map((m) => m.offset)]);
      assert.deepEqual(offsets, [0, 1, 2].map((i) => first.offset! + i), 'consecutive offsets');
      assert.deepEqual(view().messages.map((m) => m.data), [{ n: 0 }, { n: 1 }, { n: 2 }]);

      // The next live message comes right after: nothing was delivered twice.
      const live = await gateway.publishToRoom(room, 'tick', { n: HISTORY });
      assert.equal(live.delivered, 1, context(store, gateway));
      await waitFor('the live message', () => (view().messages.length === HISTORY + 1 ? true : undefined));
      assert.equal(view().lastMessage?.offset, live.offset);
      assert.deepEqual([view().streamReset, view().recovered, view().resets], [false, true, 0]);
      assert.deepEqual(heard, []);
      assert.equal(store.getStats().streamResets, 0);
      mounted.unmount();
    } finally {
      await store.shutdown();
    }
  });

  test('after a longer disconnect than the history holds, useRoom shows the reset until cleared', async () => {
    const { room, store, view, heard, mounted, first } = await roomClient('reset');
    try {
      assert.equal(view().messages[0]!.offset, first.offset);
      store.disconnect();
      await status(store, 'disconnected');
      await away(room);
      for (let n = 1; n <= HISTORY + 2; n++) await gateway.publishToRoom(room, 'tick', { n });
      store.connect();
      await waitFor('the reset rendered', () => (view().streamReset ? true : undefined));
      assert.deepEqual([view().streamReset, view().recovered, view().resets], [true, false, 1]);
      assert.deepEqual(heard, [room]);
      assert.equal(store.getStats().streamResets, 1);

      // Nothing of the lost stretch is replayed: delivery goes on with the next live one.
      const live = await gateway.publishToRoom(room, 'tick', { n: HISTORY + 3 });
      assert.equal(live.delivered, 1, context(store, gateway));
      await waitFor('the live message', () => (view().messages.length === 2 ? true : undefined));
      assert.deepEqual(view().messages.map((m) => m.offset), [first.offset, live.offset]);

      // The app refetched the room.
      view().clearStreamReset();
      await waitFor('the reset cleared', () => (view().streamReset ? undefined : true));
      assert.deepEqual([view().recovered, view().resets], [true, 1]);
      assert.deepEqual(heard, [room], 'one reset');
      mounted.unmount();
    } finally {
      await store.shutdown();
    }
  });

  // Joining, leaving and joining a history room again before the gateway answered (what
  // StrictMode's effect replay does, or a quick remount): the answer to the second join,
  // sent without a position, is a fresh start, not a reset nothing was missed for.
  test('mounting useRoom while connected reports no reset', async () => {
    const room = `feed:remount-${Date.now()}`;
    const store = new TetherStore(testOptions(gateway, newUser('remount')));
    const heard: Array<string | undefined> = [];
    store.onStreamReset((r) => heard.push(r));
    let seen: UseRoom | undefined;
    function Room() {
      seen = useRoom(room);
      return null;
    }
    try {
      store.connect();
      await status(store, 'connected');
      await gateway.publishToRoom(room, 'tick', { n: 0 }); // the stream exists
      const mounted = mount(createElement(TetherProvider, { store }, createElement(Room)));
      await waitForAsync('the room joined', async () =>
        (await gateway.publishToRoom(room, 'tick', { n: 1 })).delivered === 1 ? true : undefined);
      await waitFor('a message rendered', () => (seen?.messages.length ? true : undefined));
      assert.deepEqual(heard, []);
      assert.equal(seen!.streamReset, false);
      mounted.unmount();
    } finally {
      await store.shutdown();
    }
  });

  test('the app\'s broadcast stream resets with an undefined room', async () => {
    const store = new TetherStore(testOptions(gateway, newUser('app-stream')));
    const heard: Array<string | undefined> = [];
    store.onStreamReset((r) => heard.push(r));
    try {
      store.connect();
      await status(store, 'connected');
      const first = await gateway.publishToApp('announcement', { n: 0 });
      await waitFor('the broadcast', () => (store.getSnapshot().lastMessage ? true : undefined));
      const got = store.getSnapshot().lastMessage!;
      assert.equal(got.room, undefined);
      assert.equal(typeof got.offset, 'number', 'a kept broadcast carries its offset');
      assert.equal(got.offset, first.offset);

      store.disconnect();
      await status(store, 'disconnected');
      for (let n = 1; n <= HISTORY + 2; n++) await gateway.publishToApp('announcement', { n });
      store.connect();
      await waitFor('the reset', () => (heard.length > 0 ? true : undefined));
      assert.deepEqual(heard, [undefined]);
      assert.equal(store.getStats().streamResets, 1);
    } finally {
      await store.shutdown();
    }
  });
});
