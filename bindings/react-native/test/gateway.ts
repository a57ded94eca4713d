// A real tether-server process for the tests, started on 127.0.0.1 with a port the OS
// picks (read from its "gateway listening" log line); tokens minted with HMAC-SHA256; the
// backend HTTP API (/v1) called with fetch. The binary comes from TETHER_SERVER_BIN or
// $CARGO_TARGET_DIR/debug/tether-server (scripts/gen-bindings builds it).

import { spawn, type ChildProcess } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

export const APP = 'rn-tests';
const SECRET = 'rn-tests-jwt-secret-0123456789abcdef0123';
const ADMIN_KEY = 'rn-tests-admin-key-0123456';

function binary(): string {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
  const target = process.env.CARGO_TARGET_DIR ? resolve(root, process.env.CARGO_TARGET_DIR) : join(root, 'target');
  const path = process.env.TETHER_SERVER_BIN ?? join(target, 'debug', 'tether-server');
  if (!existsSync(path)) throw new Error(`no tether-server at ${path}: run scripts/gen-bindings first`);
  return path;
}

export class Gateway {
  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
    private readonly log: string[],
  ) {}

  get wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  /**
   * Starts a gateway on `port` (0: any free port) with `settings` (environment variables,
   * e.g. WS_PRESENCE_EVENTS) and waits until it listens.
   */
  static async start(port = 0, settings: Record<string, string> = {}): Promise<Gateway> {
    const env: NodeJS.ProcessEnv = { ...process.env };
    // The embedded broker: this gateway must not join someone's Redis.
    for (const name of ['REDIS_URL', 'REDIS_HOST', 'REDIS_PORT', 'REDIS_PASSWORD', 'REDIS_DB', 'REDIS_CLUSTER']) delete env[name];
    const child = spawn(binary(), ['--bind', `127.0.0.1:${port}`], {
      env: {
        ...env,
        JWT_SECRET: SECRET,
        ADMIN_API_KEY: ADMIN_KEY,
        LOG_FORMAT: 'json',
        RUST_LOG: 'info',
        WS_HEARTBEAT_INTERVAL: '2000',
        WS_CONNECTION_TIMEOUT: '10000',
        SHUTDOWN_TIMEOUT: '2000',
        ...settings,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const log: string[] = [];
    createInterface({ input: child.stderr! }).on('line', (line) => log.push(line));
    const bound = await new Promise<number>((resolvePort, reject) => {
      const timer = setTimeout(() => reject(new Error(`tether-server did not start:\n${log.join('\n')}`)), 30_000);
      createInterface({ input: child.stdout! }).on('line', (line) => {
        log.push(line);
        if (line.includes('gateway listening')) {
          const addr = String(JSON.parse(line).addr ?? '');
          clearTimeout(timer);
          resolvePort(Number(addr.slice(addr.lastIndexOf(':') + 1)));
        }
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`tether-server exited (${code}):\n${log.join('\n')}`));
      });
    });
    return new Gateway(child, bound, log);
  }

  /** SIGTERM; resolves when the process is gone. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((done) => this.child.once('exit', () => done()));
    this.child.kill('SIGTERM');
    const killer = setTimeout(() => this.child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(killer);
  }

  /** POST /v1/send/user; returns the inbox seq. */
  async sendToUser(user: string, type: string, data: unknown): Promise<number> {
    const answer = await this.api('POST', '/v1/send/user', { userId: user, app: APP, message: { type, data } });
    return answer.seq as number;
  }

  /** POST /v1/send/room; returns how many connections it reached. */
  async sendToRoom(room: string, type: string, data: unknown): Promise<number> {
    return (await this.publishToRoom(room, type, data)).delivered;
  }

  /** POST /v1/send/room, with the stream offset a room with history gave the message. */
  async publishToRoom(room: string, type: string, data: unknown): Promise<Published> {
    return published(await this.api('POST', '/v1/send/room', { room, app: APP, message: { type, data } }));
  }

  /** POST /v1/send/app: a broadcast to every connection of the app. */
  async publishToApp(type: string, data: unknown): Promise<Published> {
    return published(await this.api('POST', '/v1/send/app', { app: APP, message: { type, data } }));
  }

  /** GET /v1/inbound: the app messages clients sent, oldest first. */
  async inbound(): Promise<Array<{ id: string; userId: string; type: string; data: unknown }>> {
    const answer = await this.api('GET', `/v1/inbound?app=${APP}&limit=1000`);
    return answer.messages as Array<{ id: string; userId: string; type: string; data: unknown }>;
  }

  /** GET /v1/presence: the user ids in `room`, on every node. */
  async presenceUsers(room: string): Promise<string[]> {
    const answer = await this.api('GET', `/v1/presence?app=${APP}&room=${encodeURIComponent(room)}`);
    return (answer.members as Array<{ userId: string }>).map((m) => m.userId).sort();
  }

  logTail(lines = 40): string {
    return this.log.slice(-lines).join('\n');
  }

  private async api(method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
    const response = await fetch(`http://127.0.0.1:${this.port}${path}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path}: HTTP ${response.status} ${text}`);
    return JSON.parse(text) as Record<string, unknown>;
  }
}

/** What the backend API answered a publish: connections reached, and the stream offset (streams only). */
export interface Published {
  delivered: number;
  offset?: number;
}

function published(answer: Record<string, unknown>): Published {
  const result: Published = { delivered: typeof answer.delivered === 'number' ? answer.delivered : 0 };
  if (typeof answer.offset === 'number') result.offset = answer.offset;
  return result;
}

const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64url');

/** An HS256 JWT for `user` on APP. */
export function token(user: string, ttlSeconds = 3600, secret = SECRET): string {
  const header = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64(JSON.stringify({ sub: user, exp: Math.floor(Date.now() / 1000) + ttlSeconds, apps: [APP] }));
  const signature = createHmac('sha256', secret).update(`${header}.${claims}`).digest();
  return `${header}.${claims}.${b64(signature)}`;
}

let counter = 0;

/** A user id no other test uses. */
export function newUser(name: string): string {
  counter += 1;
  return `${name}-${process.pid}-${counter}-${Date.now()}`;
}

/** A fresh storage directory. */
export function storageDir(): string {
  return mkdtempSync(join(tmpdir(), 'tether-rn-'));
}

/** Options with quick backoff for tests. */
export function testOptions(gateway: Gateway, user: string, extra: Record<string, unknown> = {}) {
  counter += 1;
  return {
    url: gateway.wsUrl,
    app: APP,
    deviceId: `rn-${process.pid}-${counter}`,
    storageDir: storageDir(),
    tokens: () => token(user),
    connectTimeoutMs: 5_000,
    backoffBaseMs: 100,
    backoffCapMs: 1_000,
    ...extra,
  };
}

/** Like {@link waitFor}, for a check that is itself asynchronous (an HTTP call). */
export async function waitForAsync<T>(what: string, check: () => Promise<T | undefined>, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Resolves when `check()` returns a value other than undefined; fails after `ms`. */
export async function waitFor<T>(what: string, check: () => T | undefined, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
