import type { ConnectRouter, HandlerContext, Interceptor, ServiceImpl } from "@connectrpc/connect";
import { OtpService as OtpServiceDesc } from "../../gen/otp/v1/otp_pb.js";
import type { Logger } from "../../log.js";
import type { Caller, OtpService } from "../../otp/service.js";
import { callerOf } from "../caller.js";
import { toConnectError } from "../status.js";

// otp.v1.OtpService for connect-node (Connect, gRPC-Web and gRPC). The impl
// only establishes the caller and calls the core; errors become wire errors in
// an interceptor, so no handler can leak one by accident.

function caller(ctx: HandlerContext): Promise<Caller> {
  return callerOf({ header: (name) => ctx.requestHeader.get(name) ?? undefined });
}

/** A plain ServiceImpl, so tests can also serve it in memory (createRouterTransport). */
export function otpServiceImpl(core: OtpService): ServiceImpl<typeof OtpServiceDesc> {
  return {
    send: async (req, ctx) => core.send(req, await caller(ctx)),
    verify: async (req, ctx) => core.verify(req, await caller(ctx)),
    resend: async (req, ctx) => core.resend(req, await caller(ctx)),
    checkRateLimit: async (req, ctx) => core.checkRateLimit(req, await caller(ctx)),
  };
}

function wireErrors(log: Logger): Interceptor {
  return (next) => async (req) => {
    try {
      return await next(req);
    } catch (err) {
      throw toConnectError(err, log, `/${req.service.typeName}/${req.method.name}`);
    }
  };
}

export function otpRoutes(core: OtpService, log: Logger): (router: ConnectRouter) => void {
  return (router) => {
    router.service(OtpServiceDesc, otpServiceImpl(core), { interceptors: [wireErrors(log)] });
  };
}
