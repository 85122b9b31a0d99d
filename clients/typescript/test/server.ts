// A real `pushreach serve` for the tests: the repository's venv (or $PUSHREACH_BIN), a fresh
// SQLite database, a free loopback port, the console SMS provider, --min-delay-seconds 1, and
// one app created with `pushreach apps create --json`.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { Code, PushreachClient, PushreachError } from "../src/index.js";

const run = promisify(execFile);
// dist/test/server.js -> the repository root is four levels up.
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "..");
const PUSHREACH = process.env.PUSHREACH_BIN ?? join(ROOT, ".venv", "bin", "pushreach");

export interface App {
  accessId: string;
  secretKey: string;
}

export class Server {
  private output = "";

  private constructor(
    readonly baseUrl: string,
    readonly app: App,
    private readonly proc: ChildProcess,
    private readonly dir: string,
  ) {
    proc.stdout?.on("data", (chunk: Buffer) => (this.output += chunk.toString()));
    proc.stderr?.on("data", (chunk: Buffer) => (this.output += chunk.toString()));
  }

  /** Starts the server and waits (at most 30 s) until it answers an authenticated call. */
  static async start(): Promise<Server> {
    const dir = await mkdtemp(join(tmpdir(), "pushreach-ts-"));
    const db = join(dir, "pushreach.db");
    const { stdout } = await run(PUSHREACH, ["apps", "create", "ts-client-test", "--db", db, "--json"]);
    const created = JSON.parse(stdout) as { access_id: string; secret_key: string };
    const app = { accessId: created.access_id, secretKey: created.secret_key };
    const port = await freePort();
    const proc = spawn(
      PUSHREACH,
      ["serve", "--listen", `127.0.0.1:${port}`, "--db", db, "--min-delay-seconds", "1", "--log-level", "INFO"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    const server = new Server(`http://127.0.0.1:${port}`, app, proc, dir);
    await server.waitServing(30_000);
    return server;
  }

  /** What the server printed so far (its log: console SMS, errors). */
  log(): string {
    return this.output;
  }

  client(overrides: Partial<ConstructorParameters<typeof PushreachClient>[0]> = {}): PushreachClient {
    return new PushreachClient({ baseUrl: this.baseUrl, ...this.app, timeoutMs: 10_000, ...overrides });
  }

  private async waitServing(budgetMs: number): Promise<void> {
    const client = this.client({ retries: 0, timeoutMs: 2_000 });
    const deadline = Date.now() + budgetMs;
    try {
      for (;;) {
        if (this.proc.exitCode !== null) {
          throw new Error(`pushreach serve exited with ${this.proc.exitCode}:\n${this.output}`);
        }
        try {
          await client.getStatistics();
          return;
        } catch (error) {
          const failure = PushreachError.from(error);
          if (failure.code !== Code.Unavailable && failure.code !== Code.DeadlineExceeded) {
            throw failure;
          }
          if (Date.now() > deadline) {
            throw new Error(`pushreach serve did not answer within ${budgetMs} ms:\n${this.output}`);
          }
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    } finally {
      client.close();
    }
  }

  /** SIGTERM, then SIGKILL if it has not exited within 15 s; removes the database. */
  async stop(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      const exited = new Promise((r) => this.proc.once("exit", r));
      this.proc.kill("SIGTERM");
      const timer = setTimeout(() => this.proc.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(timer);
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** A loopback port nobody listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      const port = typeof address === "object" && address ? address.port : 0;
      probe.close(() => resolvePort(port));
    });
  });
}

/** Polls `check` every 100 ms until it returns a value, for at most `budgetMs`. */
export async function eventually<T>(what: string, budgetMs: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + budgetMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within ${budgetMs} ms`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
