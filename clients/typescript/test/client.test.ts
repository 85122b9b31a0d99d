// The client against a real `pushreach serve` (test/server.ts): the README's flow end to end,
// pages, batched events, typed errors, and which calls are retried.
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { after, before, describe, test } from "node:test";

import {
  AudienceType,
  Code,
  EventOutcome,
  EventType,
  FallbackState,
  MessageType,
  type PushInit,
  PushreachClient,
  PushreachError,
  SmsStatus,
  TriggerCondition,
} from "../src/index.js";
import { eventually, freePort, Server } from "./server.js";

let server: Server;
let client: PushreachClient;

before(async () => {
  server = await Server.start();
  client = server.client();
});

after(async () => {
  client?.close();
  await server?.stop();
});

function pushWithFallback(tokens: string[], delaySeconds = 1): PushInit {
  return {
    audienceType: AudienceType.TOKEN_LIST,
    tokenList: tokens,
    message: { title: "Approval needed", content: "Expense #42 waits for you" },
    messageType: MessageType.NOTIFY,
    resendBySms: true,
    smsInfo: {
      delayTriggerTime: delaySeconds,
      triggerCondition: TriggerCondition.NOT_ARRIVED,
      smsSignName: "Pushreach",
      smsTemplateId: "123456",
      smsAppId: "1400000001",
      smsTemplateParams: ["42"],
    },
  };
}

async function rejection(promise: Promise<unknown>): Promise<PushreachError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof PushreachError, `expected a PushreachError, got ${String(error)}`);
    return error;
  }
  assert.fail("the call succeeded");
}

describe("the fallback flow", () => {
  test("bind, push with an SMS fallback, report an arrival, read the push and page its SMS", async () => {
    // RegisterDevice is not on main yet: BindPhone registers the token with the app's default channel.
    const phones = ["13800138001", "13800138002", "13800138003"];
    const tokens = ["ts-token-a", "ts-token-b", "ts-token-c"];
    for (const [i, token] of tokens.entries()) {
      await client.bindPhone(token, phones[i]!);
    }
    const device = await client.getDevice("ts-token-b");
    assert.match(device.device?.phoneNumber ?? "", /^\+86138\S*8002$/);

    const pushed = await client.push(pushWithFallback(tokens));
    assert.match(pushed.pushId, /\S/);
    assert.equal(pushed.targetCount, 3);
    assert.ok(pushed.fallbackDueTime, "a push with resend_by_sms has a due time");

    const arrival = await client.reportEvent(pushed.pushId, "ts-token-a", EventType.ARRIVED);
    assert.equal(arrival.outcome, EventOutcome.ACCEPTED);

    // Only the phones of b and c still need an SMS when the 1 s delay ends.
    const done = await eventually("fallback done", 20_000, async () => {
      const status = await client.getPush(pushed.pushId);
      return status.push?.fallbackState === FallbackState.DONE ? status : undefined;
    });
    assert.equal(done.funnel?.targetCount, 3);
    assert.equal(done.funnel?.arrivedCount, 1);
    assert.equal(done.funnel?.smsSentCount, 2);
    assert.equal(done.push?.request?.requestId.length, 36, "the client filled in a uuid request_id");

    const targets = [];
    for await (const target of client.pushTargets(pushed.pushId, 2)) {
      targets.push(target);
    }
    assert.deepEqual(
      targets.map((t) => [t.token, t.arriveTime !== undefined, t.smsStatus]),
      [
        ["ts-token-a", true, SmsStatus.UNSPECIFIED],
        ["ts-token-b", false, SmsStatus.SENT],
        ["ts-token-c", false, SmsStatus.SENT],
      ],
    );

    // Page size 1: two pages, one record each, masked numbers unless asked.
    const first = await client.listSmsRecords({ pushId: pushed.pushId, pageSize: 1 });
    assert.equal(first.records.length, 1);
    assert.notEqual(first.nextPageToken, "");
    const records = [];
    for await (const record of client.smsRecords({ pushId: pushed.pushId, pageSize: 1 })) {
      records.push(record);
    }
    assert.deepEqual(records.map((r) => r.phoneNumber).sort(), ["+86138****8002", "+86138****8003"]);
    assert.ok(records.every((r) => r.status === SmsStatus.SENT && r.pushId === pushed.pushId));
    const full = [];
    for await (const record of client.smsRecords({ pushId: pushed.pushId, showFullPhoneNumber: true })) {
      full.push(record.phoneNumber);
    }
    assert.deepEqual(full.sort(), ["+8613800138002", "+8613800138003"]);

    const stats = await client.getStatistics();
    assert.ok(stats.pushCount >= 1n);
  });

  test("a push repeated with its request_id answers the first push", async () => {
    const request = { ...pushWithFallback(["ts-token-a"], 600), requestId: "ts-idempotent-1" };
    const once = await client.push(request);
    const again = await client.push(request);
    assert.equal(again.pushId, once.pushId);
    const cancelled = await client.cancelFallback(once.pushId);
    assert.equal(cancelled.fallbackState, FallbackState.CANCELLED);
    const changed = await rejection(client.push({ ...request, tokenList: ["ts-token-b"] }));
    assert.equal(changed.code, Code.AlreadyExists);
  });

  test("reportEvents batches a stream of events and counts the outcomes", async () => {
    const pushed = await client.push(pushWithFallback(["ts-token-a", "ts-token-b"], 600));
    async function* events() {
      yield { pushId: pushed.pushId, token: "ts-token-a", eventType: EventType.ARRIVED };
      yield { pushId: pushed.pushId, token: "ts-token-a", eventType: EventType.ARRIVED, eventTime: Date.now() };
      yield { pushId: pushed.pushId, token: "ts-token-b", eventType: EventType.CLICKED, eventTime: new Date() };
      yield { pushId: "no-such-push", token: "ts-token-a", eventType: EventType.ARRIVED };
      yield { pushId: pushed.pushId, token: "ts-token-b", eventType: EventType.UNSPECIFIED };
    }
    const answer = await client.reportEvents(events(), 2);
    assert.equal(answer.acceptedCount, 2n);
    assert.equal(answer.duplicateCount, 1n);
    assert.equal(answer.unknownPushCount, 1n);
    assert.equal(answer.invalidCount, 1n);
    assert.deepEqual(
      answer.rejected.map((r) => [r.index, r.outcome]),
      [
        [3n, EventOutcome.UNKNOWN_PUSH],
        [4n, EventOutcome.INVALID],
      ],
    );
    const status = await client.getPush(pushed.pushId);
    assert.equal(status.funnel?.arrivedCount, 2);
    assert.equal(status.funnel?.clickedCount, 1);
    assert.throws(() => client.reportEvents([], 1001), RangeError);
  });
});

describe("errors", () => {
  test("a bad request carries its BadRequest field violations", async () => {
    const bad = pushWithFallback(["ts-token-a"], 0);
    bad.smsInfo = { ...bad.smsInfo, smsTemplateId: "" };
    const error = await rejection(client.push(bad));
    assert.equal(error.code, Code.InvalidArgument);
    assert.equal(error.codeName, "INVALID_ARGUMENT");
    const fields = error.violations.map((v) => v.field);
    assert.ok(fields.includes("sms_info.delay_trigger_time"), fields.join(", "));
    assert.ok(fields.includes("sms_info.sms_template_id"), fields.join(", "));
    assert.match(error.violationsOf("sms_info.delay_trigger_time")[0] ?? "", /1 and 259200/);
    assert.match(error.message, /^INVALID_ARGUMENT: /);

    const phone = await rejection(client.bindPhone("ts-token-x", "not a number"));
    assert.equal(phone.code, Code.InvalidArgument);
    assert.deepEqual(
      phone.violations.map((v) => v.field),
      ["phone_number"],
    );
  });

  test("wrong credentials answer UNAUTHENTICATED, and it is not retried", async () => {
    let attempts = 0;
    const stranger = server.client({
      secretKey: "0".repeat(32),
      interceptors: [(next) => (req) => (attempts++, next(req))],
    });
    try {
      const error = await rejection(stranger.getPush("anything"));
      assert.equal(error.code, Code.Unauthenticated);
      assert.equal(attempts, 1);
    } finally {
      stranger.close();
    }
  });

  test("another app's push, or none, is NOT_FOUND", async () => {
    const error = await rejection(client.getPush("no-such-push"));
    assert.equal(error.code, Code.NotFound);
  });
});

describe("retries and deadlines", () => {
  // A port nobody listens on: every attempt answers UNAVAILABLE.
  async function unreachable(attempts: { requestIds: string[] }): Promise<PushreachClient> {
    const port = await freePort();
    return new PushreachClient({
      baseUrl: `http://127.0.0.1:${port}`,
      accessId: "1234567890",
      secretKey: "s",
      retries: 2,
      backoffMs: 1,
      timeoutMs: 10_000,
      interceptors: [
        (next) => (req) => {
          const message = req.stream ? undefined : (req.message as { requestId?: string });
          attempts.requestIds.push(message?.requestId ?? "");
          return next(req);
        },
      ],
    });
  }

  test("Push is retried on UNAVAILABLE with one generated request_id", async () => {
    const seen = { requestIds: [] as string[] };
    const dead = await unreachable(seen);
    try {
      const error = await rejection(dead.push(pushWithFallback(["t"], 600)));
      assert.equal(error.code, Code.Unavailable);
      assert.equal(seen.requestIds.length, 3);
      assert.equal(new Set(seen.requestIds).size, 1);
      assert.match(seen.requestIds[0]!, /^[0-9a-f-]{36}$/);
    } finally {
      dead.close();
    }
  });

  test("reads are retried; bindings and events are not", async () => {
    const seen = { requestIds: [] as string[] };
    const dead = await unreachable(seen);
    try {
      await rejection(dead.getPush("p"));
      assert.equal(seen.requestIds.length, 3);
      seen.requestIds.length = 0;
      assert.equal((await rejection(dead.bindPhone("t", "13800138000"))).code, Code.Unavailable);
      assert.equal((await rejection(dead.reportEvent("p", "t", EventType.ARRIVED))).code, Code.Unavailable);
      assert.equal(seen.requestIds.length, 2);
    } finally {
      dead.close();
    }
  });

  test("the deadline bounds every call, retries included", async () => {
    // A server that accepts connections and never answers: only the deadline ends the call.
    const silent = createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const address = silent.address();
    const port = typeof address === "object" && address ? address.port : 0;
    const mute = new PushreachClient({
      baseUrl: `http://127.0.0.1:${port}`,
      accessId: "1234567890",
      secretKey: "s",
      timeoutMs: 300,
    });
    try {
      assert.equal((await rejection(mute.getPush("p"))).code, Code.DeadlineExceeded);
      assert.equal((await rejection(mute.push(pushWithFallback(["t"], 600)))).code, Code.DeadlineExceeded);
      const controller = new AbortController();
      controller.abort();
      const aborted = await rejection(mute.getPush("p", {}, { signal: controller.signal, timeoutMs: 60_000 }));
      assert.equal(aborted.code, Code.Canceled);
      await assert.rejects(() => mute.getPush("p", {}, { timeoutMs: 0 }), RangeError);
    } finally {
      mute.close();
      silent.close();
    }
  });
});
