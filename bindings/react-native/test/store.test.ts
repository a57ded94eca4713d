// TetherStore (the logic under useWebSocket) on Node, through ubrn's napi bindings of the
// real SDK library, against a real tether-server: connecting, receiving, sending with an
// ack, refusals, the offline queue across a gateway restart, and the token provider.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TetherException, TetherStore, type ConnectionStatusName, type Message } from '../src/index';
import { Gateway, newUser, testOptions, token, waitFor } from './gateway';

function statuses(store: TetherStore): ConnectionStatusName[] {
  const seen: ConnectionStatusName[] = [store.getSnapshot().connectionStatus];
  store.subscribe(() => {
    const now = store.getSnapshot().connectionStatus;
    if (seen[seen.length - 1] !== now) seen.push(now);
  });
  return seen;
}

/** The store's error texts as they change (each new one once), recorded from now on. */
function errorTexts(store: TetherStore): string[] {
  const seen: string[] = [];
  store.subscribe(() => {
    const e = store.getSnapshot().error;
    if (e && seen[seen.length - 1] !== e) seen.push(e);
  });
  return seen;
}

async function until(store: TetherStore, status: ConnectionStatusName, ms = 15_000): Promise<void> {
  await waitFor(`status ${status} (now ${store.getSnapshot().connectionStatus})`, () =>
    store.getSnapshot().connectionStatus === status ? true : undefined, ms);
}

describe('TetherStore against a real gateway', () => {
  let gateway: Gateway;
  before(async () => {
    gateway = await Gateway.start();
  });
  after(async () => {
    await gateway.stop();
  });

  test('connects: idle, connecting, connected, and tells subscribers', async () => {
    const store = new TetherStore(testOptions(gateway, newUser('connect')));
    try {
      const seen = statuses(store);
      assert.deepEqual(store.getSnapshot(), { isConnected: false, connectionStatus: 'idle', lastMessage: null, error: null });
      const before = store.getSnapshot();
      store.connect();
      await until(store, 'connected');
      assert.deepEqual(seen, ['idle', 'connecting', 'connected']);
      assert.equal(store.getSnapshot().isConnected, true);
      assert.notEqual(store.getSnapshot(), before, 'a new snapshot object on change');
      assert.equal(store.getStats().connectionStatus, 'connected');
    } finally {
      await store.shutdown();
    }
  });

  test('receives the user\'s messages in order with parsed payloads', async () => {
    const user = newUser('receive');
    const store = new TetherStore(testOptions(gateway, user));
    try {
      const received: Message[] = [];
      store.onMessage((m) => received.push(m));
      store.connect();
      await until(store, 'connected');
      const seqs = [];
      for (const n of [1, 2, 3]) seqs.push(await gateway.sendToUser(user, 'order_update', { orderId: n, status: 'delivered' }));
      await waitFor('3 messages', () => (received.length >= 3 ? true : undefined));
      assert.deepEqual(received.map((m) => m.seq), seqs);
      assert.deepEqual(received.map((m) => m.data), [1, 2, 3].map((n) => ({ orderId: n, status: 'delivered' })));
      assert.equal(typeof received[0]!.ts, 'number');
      assert.deepEqual(store.getSnapshot().lastMessage, received[2]);
      assert.equal(store.getStats().received, 3);
    } finally {
      await store.shutdown();
    }
  });

  test('room messages arrive after joinRoom', async () => {
    const room = `orders:${Date.now()}`;
    const store = new TetherStore(testOptions(gateway, newUser('room')));
    try {
      store.joinRoom(room);
      store.connect();
      await until(store, 'connected');
      let delivered = 0;
      const deadline = Date.now() + 10_000;
      while (delivered === 0 && Date.now() < deadline) {
        delivered = await gateway.sendToRoom(room, 'eta', { minutes: 5 });
        if (delivered === 0) await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(delivered, 1);
      const message = await waitFor('the room message', () => store.getSnapshot().lastMessage ?? undefined);
      assert.equal(message.room, room);
      assert.equal(message.seq, undefined);
      assert.deepEqual(message.data, { minutes: 5 });
    } finally {
      await store.shutdown();
    }
  });

  test('sendMessage resolves with an id, the gateway acks it and the backend reads it', async () => {
    const user = newUser('send');
    const store = new TetherStore(testOptions(gateway, user));
    try {
      const acks: string[] = [];
      store.onAck((id) => acks.push(id));
      store.connect();
      await until(store, 'connected');
      const id = await store.sendMessage({ type: 'chat_message', data: { text: 'hello', n: 7 } });
      await waitFor('the ack', () => (acks.includes(id) ? true : undefined));
      const stored = (await gateway.inbound()).find((m) => m.id === id);
      assert.ok(stored, 'stored by the gateway');
      assert.equal(stored.userId, user);
      assert.equal(stored.type, 'chat_message');
      assert.deepEqual(stored.data, { text: 'hello', n: 7 });
      const stats = store.getStats();
      assert.equal(stats.acked, 1);
      assert.equal(stats.queued, 0);
      assert.equal(typeof stats.connectedForMs, 'number');
    } finally {
      await store.shutdown();
    }
  });

  test('latest wins, a time to live and cancel keep stale messages from being sent', async () => {
    const user = newUser('latest');
    const store = new TetherStore(testOptions(gateway, user));
    try {
      const replaced: Array<[string, string]> = [];
      store.onReplaced((id, by) => replaced.push([id, by]));
      const acks: string[] = [];
      store.onAck((id) => acks.push(id));
      const errors = errorTexts(store);
      const expired: string[] = [];
      store.onExpired((id) => expired.push(id));
      const first = await store.sendMessage({ type: 'location', data: { lat: 1 }, replaceKey: 'where' });
      const note = await store.sendMessage({ type: 'note', data: 'never mind' });
      const typing = await store.sendMessage({ type: 'typing', data: true, ttlMs: 50 });
      const newest = await store.sendMessage({ type: 'location', data: { lat: 2 }, replaceKey: 'where' });
      await waitFor('the replacement', () => (replaced.length > 0 ? true : undefined));
      assert.deepEqual(replaced, [[first, newest]]);
      assert.equal(await store.cancelMessage(note), true);
      assert.equal(await store.cancelMessage(note), false);
      // The typing flag is reported within about a second of its 50 ms.
      await waitFor('the expiry', () => (expired.length > 0 ? true : undefined), 5_000);
      assert.deepEqual(expired, [typing]);
      assert.deepEqual(errors, [], 'a replacement or a requested expiry is not an error');
      const stats = store.getStats();
      assert.equal(stats.replaced, 1);
      assert.equal(stats.queued, 1);
      for (const ttlMs of [0, 1.5, -3]) {
        await assert.rejects(store.sendMessage({ type: 'typing', ttlMs }), (e: unknown) => e instanceof TetherException && e.kind === 'invalidMessage');
      }
      await assert.rejects(store.sendMessage({ type: 'location', replaceKey: '' }), (e: unknown) => e instanceof TetherException && e.kind === 'invalidMessage');

      store.connect();
      await waitFor('the ack', () => (acks.includes(newest) ? true : undefined));
      const mine = (await gateway.inbound()).filter((m) => m.userId === user).map((m) => m.id);
      assert.deepEqual(mine, [newest]);
    } finally {
      await store.shutdown();
    }
  });

  test('a dead primary address falls back to the next one', async () => {
    const options = testOptions(gateway, newUser('fallback'));
    // Port 9 on loopback: nothing listens, the attempt fails at once.
    const store = new TetherStore({ ...options, url: 'ws://127.0.0.1:9/ws', fallbackUrls: [options.url] });
    try {
      const seen = statuses(store);
      store.connect();
      await until(store, 'connected');
      assert.ok(seen.includes('reconnecting'), JSON.stringify(seen));
    } finally {
      await store.shutdown();
    }
    assert.throws(
      () => new TetherStore({ ...testOptions(gateway, 'x'), fallbackUrls: ['https://not-a-websocket'] }),
      (e: unknown) => e instanceof TetherException && e.kind === 'invalidConfig' && e.message.includes('fallback_urls[0]'),
    );
  });

  test('refusals are TetherExceptions with a kind', async () => {
    const store = new TetherStore(testOptions(gateway, newUser('refuse')));
    try {
      await assert.rejects(store.sendMessage({ type: 'ping', data: {} }), (e: unknown) => {
        assert.ok(e instanceof TetherException);
        assert.equal(e.kind, 'invalidMessage');
        return true;
      });
      assert.throws(() => store.joinRoom('no spaces allowed'), (e: unknown) => e instanceof TetherException && e.kind === 'invalidMessage');
    } finally {
      await store.shutdown();
    }
    assert.throws(
      () => new TetherStore({ ...testOptions(gateway, 'x'), url: 'https://not-a-websocket' }),
      (e: unknown) => e instanceof TetherException && e.kind === 'invalidConfig',
    );
  });

  test('a signed-out user (null token) fails without retrying', async () => {
    let calls = 0;
    const store = new TetherStore({ ...testOptions(gateway, 'nobody'), tokens: () => { calls += 1; return null; } });
    try {
      store.connect();
      await until(store, 'failed');
      await new Promise((r) => setTimeout(r, 1_500));
      assert.equal(calls, 1);
      assert.equal(store.getSnapshot().connectionStatus, 'failed');
      assert.match(store.getSnapshot().error ?? '', /^failed: /);
    } finally {
      await store.shutdown();
    }
  });

  test('a provider that throws is reported with its text and retried with backoff', async () => {
    const user = newUser('throws');
    let calls = 0;
    const store = new TetherStore({
      ...testOptions(gateway, user),
      tokens: () => {
        calls += 1;
        if (calls <= 2) throw new Error('token service unavailable');
        return token(user);
      },
    });
    try {
      const seen = statuses(store);
      const errors = errorTexts(store);
      store.connect();
      await until(store, 'connected');
      assert.equal(calls, 3);
      assert.ok(seen.includes('reconnecting'), JSON.stringify(seen));
      assert.ok(errors.some((e) => e.startsWith('auth: ') && e.includes('token service unavailable')), JSON.stringify(errors));
    } finally {
      await store.shutdown();
    }
  });

  test('an async provider is awaited, like a refresh over the network', async () => {
    const user = newUser('async-token');
    let calls = 0;
    const store = new TetherStore({
      ...testOptions(gateway, user),
      tokens: async () => {
        calls += 1;
        await new Promise((r) => setTimeout(r, 300));
        return token(user);
      },
    });
    try {
      store.connect();
      await until(store, 'connected');
      assert.equal(calls, 1);
    } finally {
      await store.shutdown();
    }
  });

  test('a provider that rejects is reported with its text and retried with backoff', async () => {
    const user = newUser('rejects');
    let calls = 0;
    const store = new TetherStore({
      ...testOptions(gateway, user),
      tokens: async () => {
        calls += 1;
        if (calls <= 2) throw new Error('token service unavailable');
        return token(user);
      },
    });
    try {
      const errors = errorTexts(store);
      store.connect();
      await until(store, 'connected');
      assert.equal(calls, 3);
      assert.ok(errors.some((e) => e.startsWith('auth: ') && e.includes('token service unavailable')), JSON.stringify(errors));
    } finally {
      await store.shutdown();
    }
  });

  test('shutting down aborts a provider that is still pending', async () => {
    let signal: AbortSignal | undefined;
    const store = new TetherStore({
      ...testOptions(gateway, newUser('pending')),
      tokens: (s) => {
        signal = s;
        return new Promise<string>(() => {});
      },
    });
    let down = false;
    try {
      store.connect();
      await waitFor('the provider to be called', () => signal);
      assert.equal(signal?.aborted, false);
      await store.shutdown();
      down = true;
      await waitFor('the provider\'s signal to abort', () => (signal?.aborted ? true : undefined));
    } finally {
      if (!down) await store.shutdown();
    }
  });

  test('a provider that gives something other than a string is reported at once', async () => {
    let calls = 0;
    const store = new TetherStore({
      ...testOptions(gateway, newUser('not-a-string')),
      // What an untyped JavaScript caller could hand over.
      tokens: (() => {
        calls += 1;
        return calls === 1 ? Promise.reject(undefined) : 42;
      }) as unknown as () => string,
    });
    try {
      const errors = errorTexts(store);
      const started = Date.now();
      store.connect();
      await waitFor('two errors', () => (errors.length >= 2 ? true : undefined));
      assert.ok(Date.now() - started < 10_000, 'well before the 30 s limit');
      assert.ok(errors[0].startsWith('auth: ') && errors[0].includes('undefined'), JSON.stringify(errors));
      assert.ok(errors[1].includes('gave a number, not a string'), JSON.stringify(errors));
    } finally {
      await store.shutdown();
    }
  });

  test('a refused token (401) is replaced by a fresh one, and the error clears on connect', async () => {
    const user = newUser('refused');
    let calls = 0;
    const store = new TetherStore({
      ...testOptions(gateway, user),
      tokens: () => {
        calls += 1;
        return calls === 1 ? token(user, 3600, 'not-the-gateway-secret-0123456789abcdef') : token(user);
      },
    });
    try {
      const errors = errorTexts(store);
      store.connect();
      await until(store, 'connected');
      assert.equal(calls, 2);
      assert.ok(errors.some((e) => e.startsWith('auth: ')), JSON.stringify(errors));
      assert.equal(store.getSnapshot().error, null);
    } finally {
      await store.shutdown();
    }
  });
});

describe('the offline queue', () => {
  test('messages sent while the gateway is down are flushed in order after reconnecting', async () => {
    let gateway = await Gateway.start();
    const port = gateway.port;
    const user = newUser('offline');
    const store = new TetherStore(testOptions(gateway, user));
    try {
      const acks: string[] = [];
      store.onAck((id) => acks.push(id));
      store.connect();
      await until(store, 'connected');
      await gateway.stop();
      await until(store, 'reconnecting');
      const ids = [];
      for (const n of [1, 2, 3]) ids.push(await store.sendMessage({ type: 'offline_note', data: { n } }));
      assert.equal(store.getStats().queued, 3);

      gateway = await Gateway.start(port);
      await until(store, 'connected', 20_000);
      await waitFor('3 acks', () => (acks.length >= 3 ? true : undefined));
      assert.deepEqual([...acks].sort(), [...ids].sort());
      assert.deepEqual((await gateway.inbound()).map((m) => m.id), ids);
      assert.equal(store.getStats().queued, 0);
      assert.equal(store.getStats().reconnects, 1);
    } finally {
      await store.shutdown();
      await gateway.stop();
    }
  });
});
