// getRoomPresence (TetherStore, and the hook hands out the same function) on Node,
// through ubrn's napi bindings of the real SDK library, against a real tether-server:
// typed rejections when it cannot ask, a room not joined, and two clients in a room.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TetherException, TetherStore, toRoomPresence, type RoomPresence } from '../src/index';
import { Gateway, newUser, testOptions, waitFor } from './gateway';

function isKind(kind: string, text?: string) {
  return (e: unknown) =>
    e instanceof TetherException && e.kind === kind && (text === undefined || e.message.includes(text));
}

describe('getRoomPresence', () => {
  let gateway: Gateway;
  before(async () => {
    gateway = await Gateway.start();
  });
  after(async () => {
    await gateway.stop();
  });

  test('converts the SDK record to plain numbers', () => {
    const plain = toRoomPresence({
      room: 'lobby',
      users: 2n,
      connections: 3n,
      members: [{ userId: 'u1', userType: 'driver', connections: 2, connectionIds: ['n-1', 'n-2'] }],
      truncated: true,
    });
    assert.deepEqual(plain, {
      room: 'lobby',
      users: 2,
      connections: 3,
      members: [{ userId: 'u1', userType: 'driver', connections: 2, connectionIds: ['n-1', 'n-2'] }],
      truncated: true,
    });
  });

  test('rejects at once with a kind when it cannot ask', async () => {
    const store = new TetherStore(testOptions(gateway, newUser('presence-offline')));
    try {
      await assert.rejects(store.getRoomPresence('lobby'), isKind('network', 'not connected'));
      await assert.rejects(store.getRoomPresence('no spaces allowed'), isKind('invalidMessage'));
    } finally {
      await store.shutdown();
    }
  });

  test('two clients in a room see each other; a room not joined is refused', async () => {
    const room = `presence:${Date.now()}`;
    const users = [newUser('alice'), newUser('bob')];
    const stores = users.map((user) => new TetherStore(testOptions(gateway, user)));
    try {
      for (const store of stores) {
        store.joinRoom(room);
        store.connect();
      }
      await waitFor('both connected', () =>
        stores.every((s) => s.getSnapshot().isConnected) ? true : undefined);
      // The joins go out right after connecting: ask until the gateway counts both.
      let presence: RoomPresence | undefined;
      const deadline = Date.now() + 10_000;
      while (!presence || presence.users < 2) {
        assert.ok(Date.now() < deadline, `timed out; last answer ${JSON.stringify(presence)}`);
        presence = await stores[0]!.getRoomPresence(room);
      }
      // Each member names its one connection.
      for (const member of presence.members) {
        assert.equal(member.connectionIds.length, 1, JSON.stringify(member));
        assert.equal(typeof member.connectionIds[0], 'string');
      }
      assert.deepEqual(
        { ...presence, members: presence.members.map(({ connectionIds: _, ...m }) => m) },
        {
          room,
          users: 2,
          connections: 2,
          members: [...users].sort().map((userId) => ({ userId, userType: 'customer', connections: 1 })),
          truncated: false,
        },
      );
      await assert.rejects(stores[1]!.getRoomPresence('elsewhere'), isKind('auth', 'join the room first'));
    } finally {
      for (const store of stores) await store.shutdown();
    }
  });
});
