import type { Server, ServiceDefinition, UntypedServiceImplementation } from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import { OtpService } from "../../gen/otp/v1/otp_pb.js";

// grpc.health.v1.Health: "" (the whole server) and otp.v1.OtpService report
// SERVING only while the store answers and we are not shutting down, so load
// balancers and Kubernetes gRPC probes stop routing to a replica that cannot serve.
//
// Check and List only: Watch answers UNIMPLEMENTED. A Watch stream never ends
// on its own, anyone may open one (health needs no credentials), and each held
// a slot of OTP_MAX_OPEN_CALLS until its connection aged out (probe 9, finding
// 1). Bounding its life or its number instead would let an outsider fail it:
// gRPC's client-side health checking (the one user of Watch) takes a Watch
// that ends, or is refused, with any status but UNIMPLEMENTED as "unhealthy"
// and pulls the replica from its channel, while UNIMPLEMENTED means "no health
// checking here" and the replica is used while connected (gRPC's A17; the
// Health service's own proto says so). What a client loses is being told
// NOT_SERVING without polling; on a drain it gets GOAWAY instead.

const SERVICES = ["", OtpService.typeName];

export class GrpcHealth {
  private readonly impl = new HealthImplementation(Object.fromEntries(SERVICES.map((s) => [s, "NOT_SERVING" as const])));
  private serving = false;

  addTo(server: Pick<Server, "addService">): void {
    this.impl.addToServer({
      addService(service: ServiceDefinition, implementation: UntypedServiceImplementation): void {
        // Not registered at all: grpc-js answers a method it does not know
        // UNIMPLEMENTED at once, and the call is a unary one to the
        // open-calls bound (not one of the streaming quota, which an
        // outsider could fill to have Watch refused).
        const served = ([name]: [string, unknown]): boolean => name.toLowerCase() !== "watch";
        server.addService(
          Object.fromEntries(Object.entries(service).filter(served)) as ServiceDefinition,
          Object.fromEntries(Object.entries(implementation).filter(served)),
        );
      },
    } as Server);
  }

  set(serving: boolean): void {
    if (serving === this.serving) return;
    this.serving = serving;
    for (const service of SERVICES) this.impl.setStatus(service, serving ? "SERVING" : "NOT_SERVING");
  }
}
