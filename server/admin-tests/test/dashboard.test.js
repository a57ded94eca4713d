// The /admin dashboard in headless Chromium against a real tether-server: the key prompt
// (a wrong key is refused with a clear message), live connection counts by app and type,
// the message-rate chart (its time axis, its labels outside the stretched drawing, equal
// series all visible), the publish form reaching a connected client, disconnecting a
// user, following the messages clients send, this node's rooms, a user's inbox, and the
// presence lookup.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { launch, missingBrowser } from './browser.js';
import { ADMIN_KEY, Gateway, waitFor } from './gateway.js';

if (typeof WebSocket === 'undefined') {
  throw new Error('no global WebSocket: run with node --experimental-websocket (Node 20) or Node 22+');
}

const skip = missingBrowser();
const SHOTS = process.env.ADMIN_TEST_SCREENSHOTS ?? join(process.cwd(), 'screenshots');

describe('admin dashboard', { skip: skip ?? false }, () => {
  let gateway;
  let chromium;
  let page;
  const clients = [];
  const problems = [];

  before(async () => {
    gateway = await Gateway.start();
    chromium = await launch();
    page = await chromium.context.newPage();
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    page.on('console', (message) => {
      // The browser logs every non-2xx answer; the refusals are part of the test.
      if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
        problems.push(`console error: ${message.text()}`);
      }
    });
  });

  after(async () => {
    for (const client of clients) client.ws.close();
    await chromium?.close();
    await gateway?.stop();
  });

  const text = (selector) => page.locator(selector).textContent();
  const cell = async (table, name) =>
    page.locator(`${table} tr[data-name="${name}"] td.num`).textContent({ timeout: 1000 }).catch(() => undefined);

  test('the page is served without the key, the data is not', async () => {
    const response = await page.goto(`${gateway.url}/admin?poll=500`);
    assert.equal(response.status(), 200);
    assert.match(response.headers()['content-security-policy'], /default-src 'none'/);
    assert.equal(await page.locator('#login').isVisible(), true);
    assert.equal(await page.locator('#dashboard').isVisible(), false);
    const stats = await fetch(`${gateway.url}/v1/stats`);
    assert.equal(stats.status, 401);
  });

  test('a wrong key is refused with a clear message and not kept', async () => {
    await page.fill('#key', 'not-the-admin-key-123');
    await page.click('#login-form button[type=submit]');
    const error = page.locator('#login-error');
    await error.waitFor({ state: 'visible' });
    assert.match(await error.textContent(), /refused this key \(401 unauthorized: wrong API key\)/);
    assert.equal(await page.locator('#dashboard').isVisible(), false);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('tether.adminKey')), null);
  });

  test('the right key opens the dashboard and is kept for the tab', async () => {
    await page.fill('#key', ADMIN_KEY);
    await page.click('#login-form button[type=submit]');
    await page.locator('#dashboard').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#login-error').isVisible(), false);
    assert.equal(await text('#total-connections'), '0');
    assert.equal(await text('#nodes'), '1');
    assert.match(await text('#server-id'), /^node server_/);
    // A reload finds the key in sessionStorage and goes straight to the dashboard.
    await page.reload();
    await page.locator('#dashboard').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#login').isVisible(), false);
  });

  test('connection counts by app and by type follow the clients', async () => {
    clients.push(await gateway.connect('alice', 'shop', 'alice-phone'));
    clients.push(await gateway.connect('bob', 'shop', 'bob-phone'));
    clients.push(await gateway.connect('carol', 'backoffice', 'carol-laptop', 'admin'));
    await waitFor('3 connections shown', async () => (await text('#total-connections')) === '3');
    assert.equal(await text('#cluster-connections'), '3');
    assert.equal(await cell('#by-app', 'shop'), '2');
    assert.equal(await cell('#by-app', 'backoffice'), '1');
    assert.equal(await cell('#by-type', 'customer'), '2');
    assert.equal(await cell('#by-type', 'admin'), '1');

    clients.pop().ws.close();
    await waitFor('the closed client gone', async () => (await text('#total-connections')) === '2');
    assert.equal(await cell('#by-app', 'backoffice'), undefined);
    assert.equal(await cell('#by-type', 'admin'), undefined);
  });

  test('the chart draws message rates from the counters', async () => {
    const [alice] = clients;
    // Frames in: pings for about two seconds, so several polls see the counter move.
    for (let i = 0; i < 40; i += 1) {
      alice.ws.send(JSON.stringify({ type: 'ping' }));
      await new Promise((r) => setTimeout(r, 50));
    }
    const framesIn = page.locator('#rates [data-series="frames in"]');
    await waitFor('a frames-in rate above zero', async () => {
      const shown = await framesIn.textContent();
      const rate = Number(/: ([\d.]+)\/s/.exec(shown)?.[1] ?? 0);
      return rate > 0 ? rate : undefined;
    });
    const line = page.locator('#chart polyline[data-series="frames in"]');
    const points = (await line.getAttribute('points')).trim().split(' ');
    assert.ok(points.length >= 2, `polyline has ${points.length} points`);
    const heights = points.map((p) => Number(p.split(',')[1]));
    assert.ok(heights.every(Number.isFinite), points.join(' '));
    // Some point is above the baseline: the line shows the burst.
    assert.ok(Math.min(...heights) < 170, `flat line: ${points.join(' ')}`);
    const box = await page.locator('#chart').boundingBox();
    assert.ok(box.width > 100 && box.height > 100, JSON.stringify(box));
  });

  test('the chart has a time axis, unstretched labels, and keeps equal series visible', async () => {
    // The SVG stretches to the card: any text inside it would stretch too, so none is there.
    assert.equal(await page.locator('#chart text').count(), 0);
    assert.match(await text('#chart-max'), /^\d+(\.\d)?\/s$/);
    // Five wall-clock ticks, 30 s apart, the last one now.
    const ticks = page.locator('#chart-time span');
    assert.equal(await ticks.count(), 5);
    const labels = await ticks.allTextContents();
    for (const label of labels) assert.match(label, /^\d{2}:\d{2}:\d{2}$/, labels.join(' '));
    const seconds = labels.map((l) => l.split(':').reduce((total, part) => total * 60 + Number(part), 0));
    const now = new Date();
    const nowSeconds = now.getHours() * 3600 + now.getMinutes() * 60 + now.getSeconds();
    assert.ok(Math.abs(seconds[4] - nowSeconds) <= 5 || Math.abs(seconds[4] - nowSeconds) >= 86395, `${labels[4]} is not now`);
    for (let i = 1; i < 5; i += 1) {
      const step = (seconds[i] - seconds[i - 1] + 86400) % 86400;
      assert.equal(step, 30, labels.join(' '));
    }
    // Vertical grid lines at the inner ticks.
    assert.equal(await page.locator('#chart line.grid-line').count(), 3);
    // Drawn widest first: a series lying on another (all 0 on an idle node) still shows
    // as a border around the later, narrower line.
    const widths = await page.locator('#chart polyline').evaluateAll((lines) =>
      lines.map((l) => Number(l.getAttribute('stroke-width'))));
    assert.equal(widths.length, 4);
    for (let i = 1; i < widths.length; i += 1) assert.ok(widths[i] < widths[i - 1], widths.join(' '));
    // Rendered, each line shows pixels of its own colour where all lie at zero.
    await waitFor('an idle poll', async () => {
      const shown = await page.locator('#rates [data-series="frames in"]').textContent();
      return /: 0\.0\/s/.test(shown) ? true : undefined;
    });
    const shot = await page.locator('#chart').screenshot();
    const colours = await page.evaluate(async (png) => {
      const image = new Image();
      image.src = `data:image/png;base64,${png}`;
      await image.decode();
      const canvas = document.createElement('canvas');
      canvas.width = image.width;
      canvas.height = image.height;
      const context = canvas.getContext('2d');
      context.drawImage(image, 0, 0);
      const { data } = context.getImageData(0, 0, image.width, image.height);
      const seen = new Set();
      for (let i = 0; i < data.length; i += 4) seen.add(`${data[i]},${data[i + 1]},${data[i + 2]}`);
      return [...seen];
    }, shot.toString('base64'));
    const near = (hex) => {
      const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
      return colours.some((c) => {
        const [cr, cg, cb] = c.split(',').map(Number);
        return Math.abs(cr - r) + Math.abs(cg - g) + Math.abs(cb - b) < 30;
      });
    };
    for (const colour of ['#2f6fde', '#1f9d55', '#d97706', '#9333ea']) {
      assert.ok(near(colour), `no ${colour} pixel: a series is hidden`);
    }
  });

  test('the publish form reaches a connected user and a room, and shows refusals', async () => {
    const [alice, bob] = clients;
    await page.selectOption('#target', 'user');
    await page.fill('#app', 'shop');
    await page.fill('#user', 'alice');
    await page.fill('#type', 'notification');
    await page.fill('#data', '{"text": "from the dashboard"}');
    await page.click('#publish-form button[type=submit]');
    const got = await waitFor('alice gets the message', () =>
      alice.frames.find((f) => f.type === 'notification' && f.data?.text === 'from the dashboard'),
    );
    assert.equal(typeof got.seq, 'number');
    const result = page.locator('#publish-result');
    await waitFor('the result', async () => /^Sent: /.test(await result.textContent()));
    const answer = JSON.parse((await result.textContent()).slice('Sent: '.length));
    assert.deepEqual(answer, { id: got.id, seq: got.seq, delivered: 1, queued: true });

    bob.ws.send(JSON.stringify({ type: 'join_room', data: { room: 'lobby' } }));
    await waitFor('bob in the room', () => bob.frames.find((f) => f.type === 'room_joined'));
    await page.selectOption('#target', 'room');
    assert.equal(await page.locator('#user-field').isVisible(), false);
    await page.fill('#room', 'lobby');
    await page.fill('#type', 'room_news');
    await page.fill('#data', '[1, 2, 3]');
    await page.click('#publish-form button[type=submit]');
    const news = await waitFor('bob gets the room message', () => bob.frames.find((f) => f.type === 'room_news'));
    assert.deepEqual(news.data, [1, 2, 3]);
    assert.equal(news.room, 'lobby');
    assert.equal(alice.frames.some((f) => f.type === 'room_news'), false);

    await page.selectOption('#target', 'app');
    await page.fill('#type', 'Bad Type');
    await page.click('#publish-form button[type=submit]');
    await waitFor('the refusal', async () => /^Refused: 400 invalid_request: message\.type/.test(await result.textContent()));
    assert.equal(await result.getAttribute('class'), 'error');

    await page.fill('#type', 'notice');
    await page.fill('#data', '{not json');
    await page.click('#publish-form button[type=submit]');
    await waitFor('the local refusal', async () => /^Data is not JSON/.test(await result.textContent()));

    mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: join(SHOTS, 'dashboard.png'), fullPage: true });
  });

  test('the presence card lists who is in a room, and shows refusals', async () => {
    // bob joined lobby in the publish test; alice joins too, from a second device.
    const [alice] = clients;
    const tablet = await gateway.connect('alice', 'shop', 'alice-tablet');
    clients.push(tablet);
    for (const client of [alice, tablet]) {
      client.ws.send(JSON.stringify({ type: 'join_room', data: { room: 'lobby' } }));
      await waitFor('joined', () => client.frames.find((f) => f.type === 'room_joined'));
    }
    await page.fill('#presence-app', 'shop');
    await page.fill('#presence-room', 'lobby');
    await page.click('#presence-form button[type=submit]');
    const result = page.locator('#presence-result');
    await waitFor('the answer', async () => (await result.textContent()) === '2 users, 3 connections in lobby');
    assert.equal(await result.getAttribute('class'), 'ok');
    const rows = page.locator('#presence-members tbody tr');
    assert.deepEqual(await rows.evaluateAll((trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent))), [
      ['alice', 'customer', '2'],
      ['bob', 'customer', '1'],
    ]);

    await page.fill('#presence-room', 'no spaces');
    await page.click('#presence-form button[type=submit]');
    await waitFor('the refusal', async () => /^Refused: 400 invalid_request: /.test(await result.textContent()));
    assert.equal(await result.getAttribute('class'), 'error');
    assert.equal(await page.locator('#presence-members').isVisible(), false);
  });

  test('disconnecting a user closes each of its connections on every node', async () => {
    const phone = await gateway.connect('dave', 'shop', 'dave-phone');
    const laptop = await gateway.connect('dave', 'shop', 'dave-laptop');
    const closed = [phone, laptop].map((client) => new Promise((resolve) => client.ws.addEventListener('close', (e) => resolve(e.code))));
    await page.fill('#kick-app', 'shop');
    await page.fill('#kick-user', 'dave');
    await page.click('#kick-form button[type=submit]');
    const result = page.locator('#kick-result');
    await waitFor('the answer', async () => (await result.textContent()) === 'Disconnected 2 connections of dave');
    assert.equal(await result.getAttribute('class'), 'ok');
    assert.deepEqual(await Promise.all(closed), [4403, 4403]);

    await page.fill('#kick-app', 'bad app');
    await page.click('#kick-form button[type=submit]');
    await waitFor('the refusal', async () => /^Refused: 400 invalid_request: /.test(await result.textContent()));
    assert.equal(await result.getAttribute('class'), 'error');
  });

  test('the messages clients send are listed, newest first, and followed', async () => {
    const [alice] = clients;
    const sendChat = async (id, text) => {
      alice.ws.send(JSON.stringify({ type: 'chat', id, data: { text } }));
      await waitFor(`${id} acked`, () => alice.frames.find((f) => f.type === 'ack' && f.data?.id === id));
    };
    await sendChat('chat-1', 'first');
    await page.fill('#inbound-app', 'shop');
    await page.click('#inbound-form button[type=submit]');
    const result = page.locator('#inbound-result');
    await waitFor('the answer', async () => /^1 message from clients of shop$/.test(await result.textContent()));
    const rows = () => page.locator('#inbound-messages tbody tr').evaluateAll((trs) =>
      trs.map((tr) => [...tr.cells].slice(1).map((td) => td.textContent)));
    assert.deepEqual(await rows(), [['alice', 'alice-phone', 'chat', 'chat-1', '{"text":"first"}']]);
    // A message sent while the card is shown appears on top at the next poll.
    await sendChat('chat-2', 'second');
    await waitFor('the new message listed', async () => ((await rows())[0]?.[3] === 'chat-2' ? true : undefined));
    assert.deepEqual((await rows()).map((r) => r[3]), ['chat-2', 'chat-1']);

    await page.fill('#inbound-app', 'no spaces');
    await page.click('#inbound-form button[type=submit]');
    await waitFor('the refusal', async () => /^Refused: 400 invalid_request: /.test(await result.textContent()));
    assert.equal(await page.locator('#inbound-messages').isVisible(), false);
    mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: join(SHOTS, 'dashboard-operations.png'), fullPage: true });
  });

  test('the rooms card lists this node\'s rooms by connections and follows joins', async () => {
    // By now bob and both of alice's connections are in lobby (the presence test).
    await page.fill('#rooms-app', 'shop');
    await page.click('#rooms-form button[type=submit]');
    const result = page.locator('#rooms-result');
    await waitFor('the answer', async () => /^\d+ rooms? of shop on this node$/.test(await result.textContent()));
    assert.equal(await cell('#rooms-list', 'lobby'), '3');
    const [alice] = clients;
    alice.ws.send(JSON.stringify({ type: 'join_room', data: { room: 'orders:9' } }));
    await waitFor('orders:9 listed at the next poll', async () => ((await cell('#rooms-list', 'orders:9')) === '1' ? true : undefined));
    const order = await page.locator('#rooms-list tbody tr').evaluateAll((trs) => trs.map((tr) => tr.dataset.name));
    assert.equal(order[0], 'lobby', order.join(' '));

    await page.fill('#rooms-app', 'bad app');
    await page.click('#rooms-form button[type=submit]');
    await waitFor('the refusal', async () => /^Refused: 400 invalid_request: /.test(await result.textContent()));
    assert.equal(await page.locator('#rooms-list').isVisible(), false);
  });

  test('the inbox card shows what a user\'s inbox keeps, newest first', async () => {
    // The publish test sent alice one message; two more now.
    for (const n of [1, 2]) {
      const response = await fetch(`${gateway.url}/v1/send/user`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ userId: 'alice', app: 'shop', message: { type: 'order_update', data: { n } } }),
      });
      assert.equal(response.status, 200);
    }
    await page.fill('#inbox-app', 'shop');
    await page.fill('#inbox-user', 'alice');
    await page.click('#inbox-form button[type=submit]');
    const result = page.locator('#inbox-result');
    await waitFor('the answer', async () => (await result.textContent()) === '3 messages kept for alice in shop');
    const rows = await page.locator('#inbox-messages tbody tr').evaluateAll((trs) =>
      trs.map((tr) => [tr.cells[0].textContent, tr.cells[2].textContent, tr.cells[3].textContent]));
    assert.deepEqual(rows.map((r) => r.slice(1)), [
      ['order_update', '{"n":2}'],
      ['order_update', '{"n":1}'],
      ['notification', '{"text":"from the dashboard"}'],
    ]);
    const seqs = rows.map((r) => Number(r[0]));
    assert.ok(seqs[0] > seqs[1] && seqs[1] > seqs[2], seqs.join(' '));

    await page.fill('#inbox-user', 'nobody');
    await page.click('#inbox-form button[type=submit]');
    await waitFor('the empty answer', async () => (await result.textContent()) === '0 messages kept for nobody in shop');
    assert.equal(await page.locator('#inbox-messages').isVisible(), false);
  });

  test('forgetting the key returns to the prompt', async () => {
    await page.click('#logout');
    await page.locator('#login').waitFor({ state: 'visible' });
    assert.equal(await page.evaluate(() => sessionStorage.getItem('tether.adminKey')), null);
    assert.equal(await page.locator('#dashboard').isVisible(), false);
  });

  test('the page raised no script error', () => {
    assert.deepEqual(problems, []);
  });
});
