// Typed errors: a failed call becomes a PushreachError carrying the gRPC code and the details
// the server put in grpc-status-details-bin (google.rpc.Status): BadRequest field violations
// and the ErrorInfo reason.
import { Code, ConnectError } from "@connectrpc/connect";

import { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";

export { Code };

/** One google.rpc.BadRequest field violation: the field path and what is wrong with it. */
export interface FieldViolation {
  readonly field: string;
  readonly description: string;
}

/** The gRPC name of a status code, as grpcurl and the server's docs print it. */
export function codeName(code: Code): string {
  if (code === Code.Canceled) {
    return "CANCELLED"; // gRPC's spelling
  }
  return (Code[code] ?? "Unknown").replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** A failed call: its gRPC status code, the server's message, and the error details. */
export class PushreachError extends Error {
  override readonly name = "PushreachError";
  /** The status code (numerically the gRPC code: 3 = INVALID_ARGUMENT, 16 = UNAUTHENTICATED). */
  readonly code: Code;
  /** The code's gRPC name, e.g. "INVALID_ARGUMENT". */
  readonly codeName: string;
  /** The server's status message, without the code. */
  readonly rawMessage: string;
  /** google.rpc.ErrorInfo reason, when the server sent one. */
  readonly reason: string;
  /** google.rpc.BadRequest field violations, when the server sent them. */
  readonly violations: readonly FieldViolation[];

  constructor(
    code: Code,
    message: string,
    options: { reason?: string; violations?: readonly FieldViolation[]; cause?: unknown } = {},
  ) {
    super(`${codeName(code)}: ${message}`, { cause: options.cause });
    this.code = code;
    this.codeName = codeName(code);
    this.rawMessage = message;
    this.reason = options.reason ?? "";
    this.violations = Object.freeze([...(options.violations ?? [])]);
  }

  /** Wraps anything a call threw (a ConnectError, an abort, a network error). */
  static from(error: unknown): PushreachError {
    if (error instanceof PushreachError) {
      return error;
    }
    const connect = ConnectError.from(error);
    const violations: FieldViolation[] = [];
    let reason = "";
    try {
      for (const bad of connect.findDetails(BadRequestSchema)) {
        for (const v of bad.fieldViolations) {
          violations.push({ field: v.field, description: v.description });
        }
      }
      const [info] = connect.findDetails(ErrorInfoSchema);
      reason = info?.reason ?? "";
    } catch {
      // Undecodable details: keep the code and message, which are what matter most.
    }
    return new PushreachError(connect.code, connect.rawMessage, { reason, violations, cause: error });
  }

  /** The descriptions of the violations of one field path (e.g. "sms_info.delay_trigger_time"). */
  violationsOf(field: string): string[] {
    return this.violations.filter((v) => v.field === field).map((v) => v.description);
  }
}
