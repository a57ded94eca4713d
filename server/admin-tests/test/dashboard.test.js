// The /admin dashboard in headless Chromium against a real tether-server: the key prompt
// (a wrong key is refused with a clear message), live connection counts by app and type,
// the message-rate chart, the publish form reaching a connected client, and the presence
// lookup.

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
