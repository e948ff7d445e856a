import type { Server } from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import { OtpService } from "../../gen/otp/v1/otp_pb.js";

// grpc.health.v1.Health: "" (the whole server) and otp.v1.OtpService report
// SERVING only while the store answers and we are not shutting down, so load
// balancers and Kubernetes gRPC probes stop routing to a replica that cannot serve.

const SERVICES = ["", OtpService.typeName];

export class GrpcHealth {
  private readonly impl = new HealthImplementation(Object.fromEntries(SERVICES.map((s) => [s, "NOT_SERVING" as const])));
  private serving = false;

  addTo(server: Server): void {
    this.impl.addToServer(server);
  }

  set(serving: boolean): void {
    if (serving === this.serving) return;
    this.serving = serving;
    for (const service of SERVICES) this.impl.setStatus(service, serving ? "SERVING" : "NOT_SERVING");
  }
}
