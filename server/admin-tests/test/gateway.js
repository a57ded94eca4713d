// A real tether-server process on 127.0.0.1 with a port the OS picks (read from its
// "gateway listening" log line), the embedded broker and a fixed admin key; HS256 tokens
// for its clients. The binary is TETHER_SERVER_BIN, else $CARGO_TARGET_DIR/debug/
// tether-server, else target/debug/tether-server (cargo build -p tether-server).

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const ADMIN_KEY = 'admin-tests-key-0123456789';
const SECRET = 'admin-tests-jwt-secret-0123456789abcdef';

function binary() {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
  const target = process.env.CARGO_TARGET_DIR ? resolve(root, process.env.CARGO_TARGET_DIR) : join(root, 'target');
  const path = process.env.TETHER_SERVER_BIN ?? join(target, 'debug', 'tether-server');
  if (!existsSync(path)) throw new Error(`no tether-server at ${path}: run cargo build -p tether-server first`);
  return path;
}

export class Gateway {
  constructor(child, port, log) {
    this.child = child;
    this.port = port;
    this.log = log;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  static async start() {
    const env = { ...process.env };
    // The embedded broker: this gateway must not join someone's Redis.
    for (const name of ['REDIS_URL', 'REDIS_HOST', 'REDIS_PORT', 'REDIS_PASSWORD', 'REDIS_DB', 'REDIS_CLUSTER']) delete env[name];
    const child = spawn(binary(), ['--bind', '127.0.0.1:0'], {
      env: { ...env, JWT_SECRET: SECRET, ADMIN_API_KEY: ADMIN_KEY, LOG_FORMAT: 'json', RUST_LOG: 'info', SHUTDOWN_TIMEOUT: '2000' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const log = [];
    createInterface({ input: child.stderr }).on('line', (line) => log.push(line));
    const port = await new Promise((done, fail) => {
      const timer = setTimeout(() => fail(new Error(`tether-server did not start:\n${log.join('\n')}`)), 30_000);
      createInterface({ input: child.stdout }).on('line', (line) => {
        log.push(line);
        if (line.includes('gateway listening')) {
          const addr = String(JSON.parse(line).addr ?? '');
          clearTimeout(timer);
          done(Number(addr.slice(addr.lastIndexOf(':') + 1)));
        }
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        fail(new Error(`tether-server exited (${code}):\n${log.join('\n')}`));
      });
    });
    return new Gateway(child, port, log);
  }

  /** SIGTERM; resolves when the process is gone. */
  async stop() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((done) => this.child.once('exit', done));
    this.child.kill('SIGTERM');
    const killer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(killer);
  }

  /** A WebSocket client of `user` on `app`, open once `connection_established` came. */
  async connect(user, app, device, userType = 'customer') {
    const query = new URLSearchParams({ app, device, token: token(user, [app], userType) });
    const ws = new WebSocket(`ws://127.0.0.1:${this.port}/ws?${query}`);
    const client = { ws, frames: [] };
    ws.addEventListener('message', (event) => client.frames.push(JSON.parse(event.data)));
    await waitFor(`${user} connected`, () => client.frames.find((f) => f.type === 'connection_established'));
    return client;
  }
}

const b64 = (s) => Buffer.from(s).toString('base64url');

/** An HS256 JWT for `user` on `apps`. */
export function token(user, apps, type = 'customer') {
  const header = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64(JSON.stringify({ sub: user, exp: Math.floor(Date.now() / 1000) + 3600, apps, type }));
  const signature = createHmac('sha256', SECRET).update(`${header}.${claims}`).digest();
  return `${header}.${claims}.${b64(signature)}`;
}

/** Resolves with the first value of `check()` other than undefined; fails after `ms`. */
export async function waitFor(what, check, ms = 15_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
