// Calls per second of the two ways a Node service can call pushreach, against one real
// `pushreach serve` in the same run: this package (Connect, gRPC over node:http2) and
// @grpc/grpc-js with @grpc/proto-loader. Each client makes CALLS authenticated GetDevice calls,
// CONCURRENCY at a time, in ROUNDS alternating rounds; the figures are the best round of each,
// with the client process's CPU time per call (user + system), which is what the client costs
// its host when the server is the bottleneck.
//
//   npm run bench                  # defaults: 2000 calls, 16 in flight, 3 rounds
//   CALLS=500 ROUNDS=1 npm run bench
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

import { basicAuth } from "../src/index.js";
import { Server } from "../test/server.js";

const CALLS = Number(process.env.CALLS ?? 2000);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 16);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const PROTOS = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "..", "protos");

type Call = () => Promise<unknown>;

async function round(call: Call): Promise<{ perSecond: number; cpuMicrosPerCall: number }> {
  let next = 0;
  const cpu = process.cpuUsage();
  const start = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < CALLS) {
        next++;
        await call();
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  const used = process.cpuUsage(cpu);
  return { perSecond: CALLS / seconds, cpuMicrosPerCall: (used.user + used.system) / CALLS };
}

async function main(): Promise<void> {
  const server = await Server.start();
  const connect = server.client();
  await connect.bindPhone("bench-token", "13800138000");

  const definition = protoLoader.loadSync(join(PROTOS, "pushreach/v1/device.proto"), { includeDirs: [PROTOS] });
  const loaded = grpc.loadPackageDefinition(definition) as unknown as {
    pushreach: { v1: { DeviceService: grpc.ServiceClientConstructor } };
  };
  const stub = new loaded.pushreach.v1.DeviceService(server.baseUrl.replace("http://", ""), grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set("authorization", basicAuth(server.app.accessId, server.app.secretKey));
  const grpcJs: Call = () =>
    new Promise((ok, fail) =>
      stub.GetDevice({ token: "bench-token" }, metadata, { deadline: Date.now() + 10_000 }, (err: unknown, res: unknown) =>
        err ? fail(err) : ok(res),
      ),
    );
  const connectCall: Call = () => connect.getDevice("bench-token");

  try {
    await round(connectCall); // warm both up (connections, JIT) before measuring
    await round(grpcJs);
    const best = { connect: { perSecond: 0, cpuMicrosPerCall: Infinity }, grpcJs: { perSecond: 0, cpuMicrosPerCall: Infinity } };
    for (let i = 0; i < ROUNDS; i++) {
      for (const [name, call] of [["connect", connectCall], ["grpcJs", grpcJs]] as const) {
        const r = await round(call);
        best[name].perSecond = Math.max(best[name].perSecond, r.perSecond);
        best[name].cpuMicrosPerCall = Math.min(best[name].cpuMicrosPerCall, r.cpuMicrosPerCall);
      }
    }
    console.log(`GetDevice, ${CALLS} calls, ${CONCURRENCY} in flight, best of ${ROUNDS} rounds (same server, same run)`);
    console.log("client                       calls/s   client CPU us/call");
    for (const [name, label] of [["connect", "@connectrpc/connect-node"], ["grpcJs", "@grpc/grpc-js"]] as const) {
      console.log(`${label.padEnd(28)} ${best[name].perSecond.toFixed(0).padStart(8)}   ${best[name].cpuMicrosPerCall.toFixed(0).padStart(8)}`);
    }
    console.log(`ratio connect / grpc-js: calls/s ${(best.connect.perSecond / best.grpcJs.perSecond).toFixed(2)}, CPU per call ${(best.connect.cpuMicrosPerCall / best.grpcJs.cpuMicrosPerCall).toFixed(2)}`);
  } finally {
    connect.close();
    stub.close();
    await server.stop();
  }
}

await main();
