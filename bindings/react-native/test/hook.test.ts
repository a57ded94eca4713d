// useWebSocket() rendered by React (react-dom/server, no DOM needed) over a store that is
// connected to a real gateway: the hook returns the store's snapshot and its actions, and
// a render after a change shows the new state.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createElement } from 'react';
import { renderToString } from 'react-dom/server';
import { TetherException, TetherProvider, TetherStore, useWebSocket, type UseWebSocket } from '../src/index';
import { Gateway, newUser, testOptions, waitFor } from './gateway';

let gateway: Gateway;
before(async () => {
  gateway = await Gateway.start();
});
after(async () => {
  await gateway.stop();
});

function render(store: TetherStore): { html: string; hook: UseWebSocket } {
  let hook: UseWebSocket | undefined;
  function Status() {
    hook = useWebSocket();
    const { connectionStatus, isConnected, lastMessage, error } = hook;
    return createElement('p', null, `${connectionStatus}|${isConnected}|${lastMessage?.type ?? '-'}|${error ?? '-'}`);
  }
  const html = renderToString(createElement(TetherProvider, { store }, createElement(Status)));
  assert.ok(hook);
  return { html, hook };
}

test('useWebSocket renders the store and hands out its actions', async () => {
  const user = newUser('hook');
  const store = new TetherStore(testOptions(gateway, user));
  try {
    assert.equal(render(store).html, '<p>idle|false|-|-</p>');

    store.connect();
    await waitFor('connected', () => (store.getSnapshot().isConnected ? true : undefined));
    await gateway.sendToUser(user, 'welcome', { hello: 'rn' });
    await waitFor('the message', () => store.getSnapshot().lastMessage ?? undefined);
    const { html, hook } = render(store);
    assert.equal(html, '<p>connected|true|welcome|-</p>');
    assert.deepEqual(hook.lastMessage?.data, { hello: 'rn' });

    const id = await hook.sendMessage({ type: 'from_hook', data: { ok: true } });
    await waitFor('the ack', () => (hook.getStats().acked === 1 ? true : undefined));
    assert.ok((await gateway.inbound()).some((m) => m.id === id));
    assert.equal(typeof hook.reconnect, 'function');
    assert.equal(typeof hook.joinRoom, 'function');
    assert.equal(typeof hook.leaveRoom, 'function');

    // getRoomPresence through the hook: refused until the join is in, then the user alone.
    hook.joinRoom('hook-room');
    const presence = await (async () => {
      for (const deadline = Date.now() + 10_000; Date.now() < deadline; ) {
        try {
          return await hook.getRoomPresence('hook-room');
        } catch (e) {
          if (!(e instanceof TetherException && e.kind === 'auth')) throw e;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      throw new Error('the join never counted');
    })();
    assert.deepEqual(presence.members.map((m) => m.userId), [user]);
    assert.equal(presence.users, 1);
  } finally {
    await store.shutdown();
  }
});

test('useWebSocket without a provider says what is missing', () => {
  function Orphan() {
    useWebSocket();
    return null;
  }
  assert.throws(() => renderToString(createElement(Orphan)), /TetherProvider/);
});
