import { toBinary, type DescFile } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { Server } from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { file_google_rpc_error_details } from "../../gen/google/rpc/error_details_pb.js";
import { file_google_rpc_status } from "../../gen/google/rpc/status_pb.js";
import { file_otp_v1_otp } from "../../gen/otp/v1/otp_pb.js";
import { healthFileDescriptor } from "./health-descriptor.js";

// Server reflection (v1 and v1alpha) so grpcurl and buf curl work with no
// proto files. @grpc/reflection reads a proto-loader package definition, but
// all it uses is the serialized FileDescriptorProtos; we hand it ours, taken
// from the protobuf-es descriptors the service is built from, so reflection
// cannot drift from what is served. google.rpc error details are included so
// grpcurl can print the details of an error; grpc.health.v1 so it can call Health.

type PackageDefinition = ConstructorParameters<typeof ReflectionService>[0];

/** The files and everything they import, each once (reflection resolves imports by name). */
function withImports(roots: DescFile[]): DescFile[] {
  const seen = new Map<string, DescFile>();
  const visit = (file: DescFile): void => {
    if (seen.has(file.name)) return;
    seen.set(file.name, file);
    file.dependencies.forEach(visit);
  };
  roots.forEach(visit);
  return [...seen.values()];
}

function descriptorSet(): Buffer[] {
  const files = withImports([file_otp_v1_otp, file_google_rpc_status, file_google_rpc_error_details]).map((f) => f.proto);
  return [...files, healthFileDescriptor].map((proto) => Buffer.from(toBinary(FileDescriptorProtoSchema, proto)));
}

export function addReflection(server: Pick<Server, "addService">): void {
  const definition = { "otp.v1": { fileDescriptorProtos: descriptorSet() } } as unknown as PackageDefinition;
  new ReflectionService(definition).addToServer(server);
}
