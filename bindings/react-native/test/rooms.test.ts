// RoomStreams (the per-room state under useRoom) and the presence arithmetic under
// usePresence, without a gateway: join/leave counting, message bounds, stream resets,
// presence events applied to an answer.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RoomStreams } from '../src/rooms';
import { applyPresenceEvent, presenceEvent } from '../src/presence';
import type { Message, RoomPresence } from '../src/index';

function streams() {
  const calls: string[] = [];
  const rooms = new RoomStreams(
    (room) => calls.push(`join ${room}`),
    (room) => calls.push(`leave ${room}`),
    (f) => f(),
  );
  return { rooms, calls };
}

const msg = (room: string | undefined, n: number): Message => ({
  type: 'chat', id: `m${n}`, data: { n }, ts: n, ...(room === undefined ? {} : { room }),
});

describe('RoomStreams', () => {
  test('watches of one room share one join; the last release leaves', () => {
    const { rooms, calls } = streams();
    const a = rooms.watch('r');
    const b = rooms.watch('r');
    assert.deepEqual(calls, ['join r']);
    a();
    a(); // a second release of the same watch counts once
    assert.deepEqual(calls, ['join r']);
    b();
    assert.deepEqual(calls, ['join r', 'leave r']);
  });

  test('a join that throws watches nothing', () => {
    const rooms = new RoomStreams(() => { throw new Error('bad room'); }, () => {}, (f) => f());
    assert.throws(() => rooms.watch('no spaces'), /bad room/);
    rooms.message(msg('no spaces', 1));
    assert.equal(rooms.snapshot('no spaces').messages.length, 0);
  });

  test('keeps a watched room\'s messages, newest last, at most maxMessages', () => {
    const { rooms } = streams();
    rooms.watch('r', 2);
    const seen: number[] = [];
    rooms.subscribe('r', () => seen.push(rooms.snapshot('r').messages.length));
    for (const n of [1, 2, 3]) rooms.message(msg('r', n));
    rooms.message(msg('other', 4));
    rooms.message(msg(undefined, 5));
    const s = rooms.snapshot('r');
    assert.deepEqual(s.messages.map((m) => m.id), ['m2', 'm3']);
    assert.equal(s.lastMessage?.id, 'm3');
    assert.deepEqual(seen, [1, 2, 2]);
    assert.throws(() => rooms.watch('r', 0), RangeError);
  });

  test('a stream reset shows until cleared; unwatched rooms ignore it', () => {
    const { rooms } = streams();
    rooms.watch('r');
    const before = rooms.snapshot('r');
    assert.equal(rooms.streamReset('elsewhere'), false);
    assert.equal(rooms.snapshot('r'), before);
    assert.equal(rooms.streamReset('r'), true);
    assert.deepEqual(
      { streamReset: rooms.snapshot('r').streamReset, recovered: rooms.snapshot('r').recovered, resets: rooms.snapshot('r').resets },
      { streamReset: true, recovered: false, resets: 1 },
    );
    rooms.clearStreamReset('r');
    assert.equal(rooms.snapshot('r').streamReset, false);
    assert.equal(rooms.snapshot('r').recovered, true);
    assert.equal(rooms.snapshot('r').resets, 1);
  });

  test('an unwatched room\'s snapshot is empty and stable', () => {
    const { rooms } = streams();
    assert.equal(rooms.snapshot('x'), rooms.snapshot('x'));
    const release = rooms.watch('x');
    rooms.message(msg('x', 1));
    release();
    assert.equal(rooms.snapshot('x').messages.length, 0);
  });
});

describe('presence events', () => {
  const answer: RoomPresence = {
    room: 'r', users: 1, connections: 1, truncated: false,
    members: [{ userId: 'bob', userType: 'customer', connections: 1, connectionIds: ['c1'] }],
  };
  const event = (type: string, userId: string, connectionId: string) =>
    presenceEvent({ type, id: 'e', ts: 0, room: 'r', data: { userId, userType: 'customer', connectionId } }, 'r')!;

  test('joins add members (ordered by user id) and connections; repeats change nothing', () => {
    const p1 = applyPresenceEvent(answer, event('presence_joined', 'alice', 'c2'));
    assert.deepEqual(p1.members.map((m) => m.userId), ['alice', 'bob']);
    assert.deepEqual([p1.users, p1.connections], [2, 2]);
    const p2 = applyPresenceEvent(p1, event('presence_joined', 'bob', 'c3'));
    assert.deepEqual(p2.members.find((m) => m.userId === 'bob')?.connectionIds, ['c1', 'c3']);
    assert.deepEqual([p2.users, p2.connections], [2, 3]);
    assert.equal(applyPresenceEvent(p2, event('presence_joined', 'bob', 'c3')), p2);
  });

  test('leaves remove connections, then the member; unknown ones change nothing', () => {
    const two = applyPresenceEvent(answer, event('presence_joined', 'bob', 'c3'));
    const one = applyPresenceEvent(two, event('presence_left', 'bob', 'c1'));
    assert.deepEqual(one.members, [{ userId: 'bob', userType: 'customer', connections: 1, connectionIds: ['c3'] }]);
    const none = applyPresenceEvent(one, event('presence_left', 'bob', 'c3'));
    assert.deepEqual([none.members.length, none.users, none.connections], [0, 0, 0]);
    assert.equal(applyPresenceEvent(none, event('presence_left', 'bob', 'c9')), none);
  });

  test('only presence events of the room count', () => {
    const data = { userId: 'u', userType: 't', connectionId: 'c' };
    assert.equal(presenceEvent({ type: 'presence_joined', id: 'e', ts: 0, room: 'other', data }, 'r'), undefined);
    assert.equal(presenceEvent({ type: 'chat', id: 'e', ts: 0, room: 'r', data }, 'r'), undefined);
    assert.equal(presenceEvent({ type: 'presence_left', id: 'e', ts: 0, room: 'r', data: 'text' }, 'r'), undefined);
  });
});
