// Tether admin dashboard: asks for the admin key, keeps it in sessionStorage, and polls
// GET /v1/stats and GET /metrics with it as a bearer token. Message rates are computed
// here from the Prometheus counters and drawn as an SVG chart with a time axis. It also
// publishes, disconnects a user (DELETE /v1/connections), follows the messages clients
// send (GET /v1/inbound), lists this node's rooms (GET /v1/rooms), shows what a user's
// inbox keeps (GET /v1/inbox) and looks up who is in a room (GET /v1/presence). No
// library, no build step.
'use strict';

const KEY_STORAGE = 'tether.adminKey';
const POLL_MS = Number(new URLSearchParams(location.search).get('poll')) || 2000;
const WINDOW_MS = 120000;
// Drawn in this order, each narrower than the one before, so series with equal rates
// (all at 0 on an idle node) stay visible as nested strokes instead of hiding each other.
const SERIES = [
  { name: 'deliveries', metric: 'tether_deliveries_total', color: '#2f6fde', width: 10 },
  { name: 'frames in', metric: 'tether_frames_in_total', color: '#1f9d55', width: 7 },
  { name: 'frames out', metric: 'tether_frames_out_total', color: '#d97706', width: 4 },
  { name: 'inbound stored', metric: 'tether_inbound_stored_total', color: '#9333ea', width: 2 },
];
const TICKS = 4; // time-axis intervals over the window (every 30 s)

const $ = (id) => document.getElementById(id);
let timer = null;
let previous = null; // { at, totals } of the last /metrics poll
let history = []; // [{ at, rates: { name: perSecond } }]
let polling = false; // a poll is in flight: a slow gateway gets no pile of requests

/** An API answer that is not 2xx, with the gateway's error code and message. */
class ApiError extends Error {
  constructor(status, code, message) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { authorization: `Bearer ${sessionStorage.getItem(KEY_STORAGE) ?? ''}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
  const text = await response.text();
  if (!response.ok) {
    let code = 'http_error';
    let message = text || response.statusText;
    try {
      const parsed = JSON.parse(text);
      code = parsed.error?.code ?? code;
      message = parsed.error?.message ?? message;
    } catch {
      // Not the JSON error body (a proxy, or the 413 of the HTTP layer): show the text.
    }
    throw new ApiError(response.status, code, message);
  }
  const type = response.headers.get('content-type') ?? '';
  return type.startsWith('application/json') ? JSON.parse(text) : text;
}

// ---- login ----

function showLogin(error) {
  stopPolling();
  inbound = null;
  roomsApp = null;
  $('dashboard').hidden = true;
  $('logout').hidden = true;
  $('login').hidden = false;
  $('login-error').hidden = !error;
  $('login-error').textContent = error ?? '';
  $('server-id').textContent = '';
  $('key').focus();
}

function showDashboard() {
  $('login').hidden = true;
  $('dashboard').hidden = false;
  $('logout').hidden = false;
}

async function tryKey(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
  try {
    const stats = await api('GET', '/v1/stats');
    showDashboard();
    renderStats(stats);
    startPolling();
  } catch (error) {
    sessionStorage.removeItem(KEY_STORAGE);
    if (error instanceof ApiError && error.status === 401) {
      showLogin(`The gateway refused this key (${error.message}).`);
    } else {
      showLogin(`Cannot reach the gateway: ${error.message}`);
    }
  }
}

// ---- polling ----

function startPolling() {
  stopPolling();
  previous = null;
  history = [];
  poll();
  timer = setInterval(poll, POLL_MS);
}

function stopPolling() {
  if (timer !== null) clearInterval(timer);
  timer = null;
}

async function poll() {
  if (polling) return;
  polling = true;
  try {
    const [stats, metrics] = await Promise.all([api('GET', '/v1/stats'), api('GET', '/metrics')]);
    renderStats(stats);
    addRates(parseMetrics(metrics));
    drawChart();
    await Promise.all([followInbound(), refreshRooms()]);
    $('poll-error').hidden = true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      sessionStorage.removeItem(KEY_STORAGE);
      showLogin(`The gateway no longer accepts the key (${error.message}).`);
      return;
    }
    $('poll-error').textContent = `Update failed: ${error.message}`;
    $('poll-error').hidden = false;
  } finally {
    polling = false;
  }
}

function renderStats(stats) {
  $('server-id').textContent = `node ${stats.serverId}`;
  $('total-connections').textContent = stats.totalConnections;
  $('cluster-connections').textContent = stats.totalRedisConnections;
  $('nodes').textContent = stats.nodes;
  $('rooms').textContent = stats.totalRooms;
  $('queued').textContent = stats.totalQueuedMessages;
  renderCounts($('by-app'), stats.connectionsByApp);
  renderCounts($('by-type'), stats.connectionsByType);
}

function renderCounts(table, counts) {
  const body = table.tBodies[0];
  body.replaceChildren();
  const entries = Object.entries(counts).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  if (entries.length === 0) {
    const row = body.insertRow();
    const cell = row.insertCell();
    cell.colSpan = 2;
    cell.className = 'muted';
    cell.textContent = 'none';
    return;
  }
  for (const [name, count] of entries) {
    const row = body.insertRow();
    row.dataset.name = name;
    row.insertCell().textContent = name;
    const cell = row.insertCell();
    cell.className = 'num';
    cell.textContent = count;
  }
}

// ---- rates ----

/** Sums each metric over its labels: { name: total }. */
function parseMetrics(text) {
  const totals = {};
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const value = Number(match[3]);
    if (Number.isFinite(value)) totals[match[1]] = (totals[match[1]] ?? 0) + value;
  }
  return totals;
}

function addRates(totals) {
  const at = performance.now();
  if (previous !== null) {
    const seconds = (at - previous.at) / 1000;
    const rates = {};
    for (const series of SERIES) {
      const delta = (totals[series.metric] ?? 0) - (previous.totals[series.metric] ?? 0);
      // A counter that went down means the gateway restarted: count from zero.
      rates[series.name] = seconds > 0 ? Math.max(delta, 0) / seconds : 0;
    }
    history.push({ at, rates });
    history = history.filter((point) => at - point.at <= WINDOW_MS);
  }
  previous = { at, totals };
  renderLegend();
}

function renderLegend() {
  const last = history.at(-1);
  const legend = $('rates');
  legend.replaceChildren();
  for (const series of SERIES) {
    const item = document.createElement('span');
    item.className = 'rate';
    item.dataset.series = series.name;
    item.style.setProperty('--color', series.color);
    const rate = last ? last.rates[series.name] : null;
    item.textContent = `${series.name}: ${rate === null ? '-' : rate.toFixed(1)}/s`;
    legend.append(item);
  }
}

const SVG = 'http://www.w3.org/2000/svg'; // a namespace name, never fetched

function drawChart() {
  const svg = $('chart');
  const width = 600;
  const height = 180;
  const pad = 4;
  svg.replaceChildren();
  const max = Math.max(1, ...history.flatMap((point) => Object.values(point.rates)));
  $('chart-max').textContent = `${formatRate(max)}/s`;
  for (let tick = 1; tick < TICKS; tick += 1) {
    const grid = document.createElementNS(SVG, 'line');
    const at = ((width * tick) / TICKS).toFixed(1);
    grid.setAttribute('x1', at);
    grid.setAttribute('x2', at);
    grid.setAttribute('y1', '0');
    grid.setAttribute('y2', String(height));
    grid.setAttribute('class', 'grid-line');
    grid.setAttribute('vector-effect', 'non-scaling-stroke');
    svg.append(grid);
  }
  drawTimeAxis();
  if (history.length === 0) return;
  const now = history.at(-1).at;
  const x = (at) => width - ((now - at) / WINDOW_MS) * width;
  const y = (rate) => height - pad - (rate / max) * (height - 2 * pad);
  for (const series of SERIES) {
    const line = document.createElementNS(SVG, 'polyline');
    line.setAttribute('fill', 'none');
    line.setAttribute('stroke', series.color);
    line.setAttribute('stroke-width', String(series.width));
    line.setAttribute('stroke-linejoin', 'round');
    line.setAttribute('vector-effect', 'non-scaling-stroke');
    line.dataset.series = series.name;
    const points = history.map((point) => `${x(point.at).toFixed(1)},${y(point.rates[series.name]).toFixed(1)}`);
    // One point draws nothing: start the line at the left edge with the same value.
    if (points.length === 1) points.unshift(`0,${y(history[0].rates[series.name]).toFixed(1)}`);
    line.setAttribute('points', points.join(' '));
    svg.append(line);
  }
}

/** Wall-clock times under the chart: the window's start, every 30 s, and now. */
function drawTimeAxis() {
  const axis = $('chart-time');
  axis.replaceChildren();
  const now = Date.now();
  for (let tick = 0; tick <= TICKS; tick += 1) {
    const label = document.createElement('span');
    const at = new Date(now - ((TICKS - tick) * WINDOW_MS) / TICKS);
    label.textContent = at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
    label.dataset.secondsAgo = String(((TICKS - tick) * WINDOW_MS) / TICKS / 1000);
    axis.append(label);
  }
}

const formatRate = (rate) => (rate >= 100 ? rate.toFixed(0) : rate.toFixed(1));

// ---- publish ----

function targetChanged() {
  const target = $('target').value;
  $('user-field').hidden = target !== 'user';
  $('room-field').hidden = target !== 'room';
  $('user').required = target === 'user';
  $('room').required = target === 'room';
}

async function publish(event) {
  event.preventDefault();
  const result = $('publish-result');
  const target = $('target').value;
  const message = { type: $('type').value.trim() };
  const raw = $('data').value.trim();
  if (raw !== '') {
    try {
      message.data = JSON.parse(raw);
    } catch (error) {
      showResult(result, false, `Data is not JSON: ${error.message}`);
      return;
    }
  }
  const body = { app: $('app').value.trim(), message };
  if (target === 'user') body.userId = $('user').value;
  if (target === 'room') body.room = $('room').value.trim();
  try {
    const answer = await api('POST', `/v1/send/${target}`, body);
    showResult(result, true, `Sent: ${JSON.stringify(answer)}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      sessionStorage.removeItem(KEY_STORAGE);
      showLogin(`The gateway no longer accepts the key (${error.message}).`);
      return;
    }
    showResult(result, false, `Refused: ${error.message}`);
  }
}

// ---- disconnect ----

async function kick(event) {
  event.preventDefault();
  const result = $('kick-result');
  const user = $('kick-user').value;
  const query = new URLSearchParams({ app: $('kick-app').value.trim(), userId: user });
  try {
    const answer = await api('DELETE', `/v1/connections?${query}`);
    showResult(result, true, `Disconnected ${plural(answer.kicked, 'connection')} of ${user}`);
  } catch (error) {
    if (signedOut(error)) return;
    showResult(result, false, `Refused: ${error.message}`);
  }
}

// ---- messages from clients ----

const INBOUND_SHOWN = 20;
const INBOUND_PAGE = 1000;
const INBOUND_FIRST_PAGES = 50; // at most 50,000 older messages skipped to reach the end
let inbound = null; // { app, next, messages } while the card follows an app

async function showInbound(event) {
  event.preventDefault();
  const app = $('inbound-app').value.trim();
  const result = $('inbound-result');
  inbound = { app, next: undefined, messages: [] };
  const mine = inbound;
  try {
    let pages = 0;
    let more = true;
    while (more && pages < INBOUND_FIRST_PAGES) {
      more = (await readInbound(mine)) === INBOUND_PAGE;
      pages += 1;
      if (inbound !== mine) return;
    }
    const note = more ? ` (${INBOUND_FIRST_PAGES * INBOUND_PAGE} read; newer ones follow as they come)` : '';
    showResult(result, true, `${plural(mine.messages.length, 'message')} from clients of ${app}${note}`);
    renderInbound();
  } catch (error) {
    if (signedOut(error)) return;
    if (inbound === mine) inbound = null;
    $('inbound-messages').hidden = true;
    showResult(result, false, `Refused: ${error.message}`);
  }
}

/** Reads the page after the card's cursor into it; the number of messages read. */
async function readInbound(state) {
  const query = new URLSearchParams({ app: state.app, limit: String(INBOUND_PAGE) });
  if (state.next) query.set('after', state.next);
  const page = await api('GET', `/v1/inbound?${query}`);
  if (page.next) state.next = page.next;
  state.messages = state.messages.concat(page.messages).slice(-INBOUND_SHOWN);
  return page.messages.length;
}

/** Called by each poll: new messages of the followed app. */
async function followInbound() {
  const state = inbound;
  if (state === null) return;
  if ((await readInbound(state)) > 0 && inbound === state) renderInbound();
}

function renderInbound() {
  fillTable($('inbound-messages'), [...inbound.messages].reverse(), (message) => message.id, (message) => [
    clock(message.ts), message.userId, message.device ?? '', message.type, message.id, dataCell(message.data),
  ]);
}

/** Fills `table`'s body with a row per item (`name` keys the row, `cells` gives its
 *  cells: text, or `{ text, className }`), and hides the table when there is none. */
function fillTable(table, items, name, cells) {
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const item of items) {
    const row = body.insertRow();
    row.dataset.name = String(name(item));
    for (const cell of cells(item)) {
      const { text, className } = typeof cell === 'object' ? cell : { text: cell };
      const td = row.insertCell();
      td.textContent = text;
      if (className) td.className = className;
      if (className === 'data') td.title = text;
    }
  }
  table.hidden = items.length === 0;
}

const clock = (ms) => (ms === undefined ? '' : new Date(ms).toLocaleTimeString([], { hour12: false }));
const dataCell = (data) => ({ text: data === undefined ? '' : JSON.stringify(data), className: 'data' });
const numberCell = (n) => ({ text: String(n), className: 'num' });

// ---- rooms ----

let roomsApp = null; // the app the rooms card follows

async function listRooms(event) {
  event.preventDefault();
  roomsApp = $('rooms-app').value.trim();
  await refreshRooms();
}

/** Called by the form and by each poll while an app is shown. */
async function refreshRooms() {
  const app = roomsApp;
  if (app === null) return;
  const result = $('rooms-result');
  const table = $('rooms-list');
  try {
    const answer = await api('GET', `/v1/rooms?${new URLSearchParams({ app })}`);
    if (app !== roomsApp) return;
    const listed = answer.truncated ? ` (the ${answer.rooms.length} largest listed)` : '';
    showResult(result, true, `${plural(answer.total, 'room')} of ${app} on this node${listed}`);
    fillTable(table, answer.rooms, (room) => room.room, (room) => [room.room, numberCell(room.connections)]);
  } catch (error) {
    if (signedOut(error)) return;
    roomsApp = null;
    table.hidden = true;
    showResult(result, false, `Refused: ${error.message}`);
  }
}

// ---- a user's inbox ----

const INBOX_SHOWN = 20;
const INBOX_PAGE = 1000;
let inboxReads = 0; // only the latest read may show its answer

async function showInbox(event) {
  event.preventDefault();
  const app = $('inbox-app').value.trim();
  const user = $('inbox-user').value;
  const result = $('inbox-result');
  const table = $('inbox-messages');
  const mine = ++inboxReads;
  table.hidden = true;
  try {
    let kept = [];
    let count = 0;
    let after = 0;
    for (;;) {
      const query = new URLSearchParams({ app, userId: user, after: String(after), limit: String(INBOX_PAGE) });
      const page = await api('GET', `/v1/inbox?${query}`);
      if (mine !== inboxReads) return;
      count += page.messages.length;
      kept = kept.concat(page.messages).slice(-INBOX_SHOWN);
      if (!page.more || page.messages.length === 0) break;
      after = page.messages.at(-1).seq;
    }
    showResult(result, true, `${plural(count, 'message')} kept for ${user} in ${app}`);
    fillTable(table, kept.reverse(), (message) => message.seq, (message) => [
      numberCell(message.seq), clock(message.ts), message.type, dataCell(message.data),
    ]);
  } catch (error) {
    if (signedOut(error)) return;
    if (mine !== inboxReads) return;
    showResult(result, false, `Refused: ${error.message}`);
  }
}

/** A 401 means the key is no longer accepted: back to the prompt. True when it was. */
function signedOut(error) {
  if (!(error instanceof ApiError && error.status === 401)) return false;
  sessionStorage.removeItem(KEY_STORAGE);
  showLogin(`The gateway no longer accepts the key (${error.message}).`);
  return true;
}

// ---- presence ----

const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
let lookUps = 0; // only the latest look-up may show its answer

async function lookUpPresence(event) {
  event.preventDefault();
  const result = $('presence-result');
  const table = $('presence-members');
  const query = new URLSearchParams({ app: $('presence-app').value.trim(), room: $('presence-room').value.trim() });
  const mine = ++lookUps;
  table.hidden = true;
  try {
    const answer = await api('GET', `/v1/presence?${query}`);
    if (mine !== lookUps) return;
    const listed = answer.truncated ? ` (the first ${answer.members.length} by user id listed)` : '';
    showResult(result, true, `${plural(answer.users, 'user')}, ${plural(answer.connections, 'connection')} in ${answer.room}${listed}`);
    fillTable(table, answer.members, (member) => member.userId, (member) => [
      member.userId, member.userType, numberCell(member.connections),
    ]);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      sessionStorage.removeItem(KEY_STORAGE);
      showLogin(`The gateway no longer accepts the key (${error.message}).`);
      return;
    }
    if (mine !== lookUps) return;
    showResult(result, false, `Refused: ${error.message}`);
  }
}

function showResult(element, ok, text) {
  element.hidden = false;
  element.className = ok ? 'ok' : 'error';
  element.textContent = text;
}

// ---- start ----

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', (event) => {
    event.preventDefault();
    tryKey($('key').value.trim());
  });
  $('logout').addEventListener('click', () => {
    sessionStorage.removeItem(KEY_STORAGE);
    showLogin();
  });
  $('target').addEventListener('change', targetChanged);
  $('publish-form').addEventListener('submit', publish);
  $('presence-form').addEventListener('submit', lookUpPresence);
  $('kick-form').addEventListener('submit', kick);
  $('inbound-form').addEventListener('submit', showInbound);
  $('rooms-form').addEventListener('submit', listRooms);
  $('inbox-form').addEventListener('submit', showInbox);
  targetChanged();
  renderLegend();
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) tryKey(key);
  else showLogin();
});
