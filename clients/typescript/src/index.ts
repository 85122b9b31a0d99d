// @pushreach/client: the TypeScript client of pushreach for Node services.
// PushreachClient is the typed layer; the generated messages, enums and services of
// pushreach.v1 are re-exported for building requests and reading answers.
export {
  basicAuth,
  type CallSettings,
  type ClientOptions,
  type EventInit,
  MAX_EVENTS_PER_MESSAGE,
  PushreachClient,
  type PushInit,
  type SmsRecordFilter,
  type TimeLike,
  timestamp,
} from "./client.js";
export { Code, codeName, type FieldViolation, PushreachError } from "./errors.js";
export * from "./gen/pushreach/v1/admin_pb.js";
export * from "./gen/pushreach/v1/device_pb.js";
export * from "./gen/pushreach/v1/event_pb.js";
export * from "./gen/pushreach/v1/push_pb.js";
export * from "./gen/pushreach/v1/sms_pb.js";
