// A thin typed layer over the generated Connect clients, with the same calling discipline as
// the Python client (clients/python/pushreach/client.py): app credentials on every call, a
// deadline on every call (retries share it), retries on UNAVAILABLE only for calls that are safe
// to repeat, pages as async iterators, events batched into a client stream.
import { randomUUID } from "node:crypto";
import type { SecureClientSessionOptions } from "node:http2";

import type { MessageInitShape } from "@bufbuild/protobuf";
import { type Timestamp, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type CallOptions, type Client, Code, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import { PushreachError } from "./errors.js";
import {
  type BindAccountResponse,
  type BindPhoneResponse,
  DeviceService,
  type GetDeviceResponse,
  type UnbindAccountResponse,
  type UnbindPhoneResponse,
} from "./gen/pushreach/v1/device_pb.js";
import {
  EventService,
  type EventType,
  type ReportEventResponse,
  type ReportEventsRequest,
  ReportEventsRequestSchema,
  type ReportEventsResponse,
} from "./gen/pushreach/v1/event_pb.js";
import {
  type CancelFallbackResponse,
  type GetPushResponse,
  type PushRequestSchema,
  type PushResponse,
  PushService,
  type PushTarget,
} from "./gen/pushreach/v1/push_pb.js";
import {
  type GetStatisticsResponse,
  type ListSmsRecordsResponse,
  type SmsRecord,
  SmsService,
  type SmsStatus,
} from "./gen/pushreach/v1/sms_pb.js";
import { create } from "@bufbuild/protobuf";

/** The server's limit of events per ReportEvents message. */
export const MAX_EVENTS_PER_MESSAGE = 1000;

/** A point in time: a Date, or milliseconds since the epoch (as Date.now() gives). */
export type TimeLike = Date | number;

/** A push request as a plain object (every field optional, enums as the generated enums). */
export type PushInit = MessageInitShape<typeof PushRequestSchema>;

/** One event for reportEvents; eventTime may be a Date or epoch milliseconds. */
export interface EventInit {
  pushId?: string;
  token?: string;
  eventType?: EventType;
  eventTime?: TimeLike | Timestamp;
}

export interface ClientOptions {
  /** The server, as a URL: "http://127.0.0.1:50051" (plaintext) or "https://push.example:443". */
  baseUrl: string;
  /** The app's credentials (`pushreach apps create`). */
  accessId: string;
  secretKey: string;
  /** Deadline of each call in milliseconds, retries included (default 10,000). */
  timeoutMs?: number;
  /** How many times a retryable call is repeated after UNAVAILABLE (default 3). */
  retries?: number;
  /** First backoff after UNAVAILABLE, doubled each time up to maxBackoffMs (100 and 2,000). */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** TLS settings for https: URLs (ca for your own CA, cert + key for mutual TLS). */
  tls?: Pick<SecureClientSessionOptions, "ca" | "cert" | "key" | "servername">;
  /** Connect interceptors, run on every call (after the credentials are added). */
  interceptors?: Interceptor[];
}

/** Per-call options: a deadline in milliseconds and a signal to cancel the call. */
export interface CallSettings {
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Filters of ListSmsRecords. */
export interface SmsRecordFilter {
  pushId?: string;
  phoneNumber?: string;
  statuses?: SmsStatus[];
  startTime?: TimeLike;
  endTime?: TimeLike;
  /** Phone numbers are masked unless this is true. */
  showFullPhoneNumber?: boolean;
  pageSize?: number;
}

/** The authorization metadata value of an app (TPNS's scheme): `Basic base64(id:secret)`. */
export function basicAuth(accessId: string, secretKey: string): string {
  return `Basic ${Buffer.from(`${accessId}:${secretKey}`, "utf8").toString("base64")}`;
}

/** A protobuf Timestamp from a Date or epoch milliseconds. */
export function timestamp(value: TimeLike | Timestamp): Timestamp {
  if (value instanceof Date) {
    return timestampFromMs(value.getTime());
  }
  if (typeof value === "number") {
    if (!Number.isFinite(value)) {
      throw new RangeError("a time must be a finite number of milliseconds");
    }
    return timestampFromMs(value);
  }
  return value;
}

/**
 * A pushreach client for one app, speaking gRPC over HTTP/2. Call `close()` when done (or use
 * `await using client = new PushreachClient(...)` where explicit resource management exists).
 */
export class PushreachClient {
  readonly timeoutMs: number;
  readonly retries: number;
  private readonly backoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly sessions: Http2SessionManager;
  private readonly push_: Client<typeof PushService>;
  private readonly device: Client<typeof DeviceService>;
  private readonly event: Client<typeof EventService>;
  private readonly sms: Client<typeof SmsService>;

  constructor(options: ClientOptions) {
    const { timeoutMs = 10_000, retries = 3, backoffMs = 100, maxBackoffMs = 2_000 } = options;
    if (!(timeoutMs > 0)) {
      throw new RangeError("timeoutMs must be positive");
    }
    if (!Number.isInteger(retries) || retries < 0) {
      throw new RangeError("retries must be a whole number, 0 or more");
    }
    if (!options.accessId || !options.secretKey) {
      throw new RangeError("accessId and secretKey are required");
    }
    const url = new URL(options.baseUrl);
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new RangeError("baseUrl must be an http: or https: URL");
    }
    this.timeoutMs = timeoutMs;
    this.retries = retries;
    this.backoffMs = backoffMs;
    this.maxBackoffMs = maxBackoffMs;
    // Our own session manager, so that close() can end the HTTP/2 connection.
    this.sessions = new Http2SessionManager(url, { pingIntervalMs: 30_000 }, options.tls ?? {});
    const authorization = basicAuth(options.accessId, options.secretKey);
    const credentials: Interceptor = (next) => (req) => {
      req.header.set("authorization", authorization);
      return next(req);
    };
    const transport: Transport = createGrpcTransport({
      baseUrl: options.baseUrl,
      sessionManager: this.sessions,
      interceptors: [credentials, ...(options.interceptors ?? [])],
    });
    this.push_ = createClient(PushService, transport);
    this.device = createClient(DeviceService, transport);
    this.event = createClient(EventService, transport);
    this.sms = createClient(SmsService, transport);
  }

  /** Ends the HTTP/2 connection; calls in flight fail. */
  close(): void {
    this.sessions.abort();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  // -- the calling discipline -------------------------------------------------------------

  private async call<R>(
    rpc: (options: CallOptions) => Promise<R>,
    settings: CallSettings | undefined,
    retry: boolean,
  ): Promise<R> {
    const budget = settings?.timeoutMs ?? this.timeoutMs;
    if (!(budget > 0)) {
      throw new RangeError("timeoutMs must be positive");
    }
    const deadline = performance.now() + budget;
    for (let attempt = 0; ; attempt++) {
      const remaining = Math.floor(deadline - performance.now());
      if (remaining <= 0) {
        throw new PushreachError(Code.DeadlineExceeded, `no answer within ${budget} ms`);
      }
      try {
        return await rpc({ timeoutMs: remaining, signal: settings?.signal });
      } catch (error) {
        const failure = PushreachError.from(error);
        if (!(retry && failure.code === Code.Unavailable && attempt < this.retries)) {
          throw failure;
        }
      }
      const pause = Math.min(this.maxBackoffMs, this.backoffMs * 2 ** attempt);
      await sleep(Math.max(0, Math.min(pause, deadline - performance.now())), settings?.signal);
    }
  }

  // -- PushService ------------------------------------------------------------------------

  /** Sends a push. A request without requestId gets a random one, so retries never push twice. */
  push(request: PushInit, settings?: CallSettings): Promise<PushResponse> {
    const filled: PushInit = request.requestId ? request : { ...request, requestId: randomUUID() };
    return this.call((o) => this.push_.push(filled, o), settings, true);
  }

  /** A push's state, funnel counts and one page of its targets. */
  getPush(
    pushId: string,
    page: { pageSize?: number; pageToken?: string } = {},
    settings?: CallSettings,
  ): Promise<GetPushResponse> {
    const request = { pushId, pageSize: page.pageSize ?? 0, pageToken: page.pageToken ?? "" };
    return this.call((o) => this.push_.getPush(request, o), settings, true);
  }

  /** Every target of a push, page after page (each page its own call and deadline). */
  async *pushTargets(pushId: string, pageSize = 0, settings?: CallSettings): AsyncGenerator<PushTarget> {
    let pageToken = "";
    do {
      const page = await this.getPush(pushId, { pageSize, pageToken }, settings);
      yield* page.targets;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /** Stops a pending SMS fallback (idempotent: cancelling again succeeds). */
  cancelFallback(pushId: string, requestId = "", settings?: CallSettings): Promise<CancelFallbackResponse> {
    const request = { pushId, requestId: requestId || randomUUID() };
    return this.call((o) => this.push_.cancelFallback(request, o), settings, true);
  }

  // -- DeviceService (never retried: a repeat could undo a later change) ------------------

  /** Binds a phone number (E.164, or a bare mainland number) to a device token. */
  bindPhone(token: string, phoneNumber: string, requestId = "", settings?: CallSettings): Promise<BindPhoneResponse> {
    return this.call((o) => this.device.bindPhone({ token, phoneNumber, requestId }, o), settings, false);
  }

  unbindPhone(token: string, requestId = "", settings?: CallSettings): Promise<UnbindPhoneResponse> {
    return this.call((o) => this.device.unbindPhone({ token, requestId }, o), settings, false);
  }

  bindAccount(token: string, account: string, requestId = "", settings?: CallSettings): Promise<BindAccountResponse> {
    return this.call((o) => this.device.bindAccount({ token, account, requestId }, o), settings, false);
  }

  unbindAccount(
    token: string,
    account: string,
    requestId = "",
    settings?: CallSettings,
  ): Promise<UnbindAccountResponse> {
    return this.call((o) => this.device.unbindAccount({ token, account, requestId }, o), settings, false);
  }

  getDevice(token: string, settings?: CallSettings): Promise<GetDeviceResponse> {
    return this.call((o) => this.device.getDevice({ token }, o), settings, true);
  }

  // -- EventService (never retried) -------------------------------------------------------

  /** Reports one event; without eventTime the server uses the time it receives it. */
  reportEvent(
    pushId: string,
    token: string,
    eventType: EventType,
    eventTime?: TimeLike,
    settings?: CallSettings,
  ): Promise<ReportEventResponse> {
    const request = {
      pushId,
      token,
      eventType,
      eventTime: eventTime === undefined ? undefined : timestamp(eventTime),
    };
    return this.call((o) => this.event.reportEvent(request, o), settings, false);
  }

  /**
   * Streams events, batchSize (at most 1,000) to a message, in one call with one answer.
   * RejectedEvent.index numbers the events from 0 in the order given.
   */
  reportEvents(
    events: Iterable<EventInit> | AsyncIterable<EventInit>,
    batchSize = MAX_EVENTS_PER_MESSAGE,
    settings?: CallSettings,
  ): Promise<ReportEventsResponse> {
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > MAX_EVENTS_PER_MESSAGE) {
      throw new RangeError(`batchSize must be 1 to ${MAX_EVENTS_PER_MESSAGE}`);
    }
    async function* messages(): AsyncGenerator<ReportEventsRequest> {
      let batch: EventInit[] = [];
      for await (const event of events) {
        batch.push(event);
        if (batch.length === batchSize) {
          yield toMessage(batch);
          batch = [];
        }
      }
      if (batch.length > 0) {
        yield toMessage(batch);
      }
    }
    // A stream is consumed as it is sent, so it cannot be replayed: never retried.
    return this.call((o) => this.event.reportEvents(messages(), o), settings, false);
  }

  // -- SmsService -------------------------------------------------------------------------

  /** One page of SMS records, newest first. Phone numbers are masked unless asked. */
  listSmsRecords(
    filter: SmsRecordFilter & { pageToken?: string } = {},
    settings?: CallSettings,
  ): Promise<ListSmsRecordsResponse> {
    const request = {
      pushId: filter.pushId ?? "",
      phoneNumber: filter.phoneNumber ?? "",
      statuses: filter.statuses ?? [],
      startTime: filter.startTime === undefined ? undefined : timestamp(filter.startTime),
      endTime: filter.endTime === undefined ? undefined : timestamp(filter.endTime),
      showFullPhoneNumber: filter.showFullPhoneNumber ?? false,
      pageSize: filter.pageSize ?? 0,
      pageToken: filter.pageToken ?? "",
    };
    return this.call((o) => this.sms.listSmsRecords(request, o), settings, true);
  }

  /** Every matching SMS record, page after page (each page its own call and deadline). */
  async *smsRecords(filter: SmsRecordFilter = {}, settings?: CallSettings): AsyncGenerator<SmsRecord> {
    let pageToken = "";
    do {
      const page = await this.listSmsRecords({ ...filter, pageToken }, settings);
      yield* page.records;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /** The app's figures for pushes accepted in [startTime, endTime) (default: the last 7 days). */
  getStatistics(
    range: { startTime?: TimeLike; endTime?: TimeLike } = {},
    settings?: CallSettings,
  ): Promise<GetStatisticsResponse> {
    const request = {
      startTime: range.startTime === undefined ? undefined : timestamp(range.startTime),
      endTime: range.endTime === undefined ? undefined : timestamp(range.endTime),
    };
    return this.call((o) => this.sms.getStatistics(request, o), settings, true);
  }
}

function toMessage(batch: EventInit[]): ReportEventsRequest {
  return create(ReportEventsRequestSchema, {
    events: batch.map((e) => ({
      pushId: e.pushId,
      token: e.token,
      eventType: e.eventType,
      eventTime: e.eventTime === undefined ? undefined : timestamp(e.eventTime),
    })),
  });
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(PushreachError.from(signal.reason));
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(PushreachError.from(signal?.reason));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
