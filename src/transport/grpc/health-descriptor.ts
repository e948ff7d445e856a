import { create } from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label as Label,
  FieldDescriptorProto_Type as Type,
  FileDescriptorProtoSchema,
  type FileDescriptorProto,
} from "@bufbuild/protobuf/wkt";

// grpc/health/v1/health.proto as a descriptor, for reflection. grpc-health-check
// ships it only through proto-loader, whose descriptor names the map entry
// "Statuses" instead of "StatusesEntry"; grpcurl (protobuf-go) rejects that and
// then cannot call Health at all. Transcribed from
// https://github.com/grpc/grpc-proto/blob/master/grpc/health/v1/health.proto
// (the wire contract: it does not change). If the lead adds that file to
// third_party/proto and buf.gen.yaml, replace this with the generated file_grpc_health_v1_health.

const optional = Label.OPTIONAL;

export const healthFileDescriptor: FileDescriptorProto = create(FileDescriptorProtoSchema, {
  name: "grpc/health/v1/health.proto",
  package: "grpc.health.v1",
  syntax: "proto3",
  messageType: [
    { name: "HealthListRequest" },
    {
      name: "HealthListResponse",
      field: [
        { name: "statuses", jsonName: "statuses", number: 1, label: Label.REPEATED, type: Type.MESSAGE, typeName: ".grpc.health.v1.HealthListResponse.StatusesEntry" },
      ],
      nestedType: [
        {
          name: "StatusesEntry",
          field: [
            { name: "key", jsonName: "key", number: 1, label: optional, type: Type.STRING },
            { name: "value", jsonName: "value", number: 2, label: optional, type: Type.MESSAGE, typeName: ".grpc.health.v1.HealthCheckResponse" },
          ],
          options: { mapEntry: true },
        },
      ],
    },
    {
      name: "HealthCheckRequest",
      field: [{ name: "service", jsonName: "service", number: 1, label: optional, type: Type.STRING }],
    },
    {
      name: "HealthCheckResponse",
      field: [
        { name: "status", jsonName: "status", number: 1, label: optional, type: Type.ENUM, typeName: ".grpc.health.v1.HealthCheckResponse.ServingStatus" },
      ],
      enumType: [
        {
          name: "ServingStatus",
          value: [
            { name: "UNKNOWN", number: 0 },
            { name: "SERVING", number: 1 },
            { name: "NOT_SERVING", number: 2 },
            { name: "SERVICE_UNKNOWN", number: 3 },
          ],
        },
      ],
    },
  ],
  service: [
    {
      name: "Health",
      method: [
        { name: "Check", inputType: ".grpc.health.v1.HealthCheckRequest", outputType: ".grpc.health.v1.HealthCheckResponse" },
        { name: "List", inputType: ".grpc.health.v1.HealthListRequest", outputType: ".grpc.health.v1.HealthListResponse" },
        { name: "Watch", inputType: ".grpc.health.v1.HealthCheckRequest", outputType: ".grpc.health.v1.HealthCheckResponse", serverStreaming: true },
      ],
    },
  ],
  options: { goPackage: "google.golang.org/grpc/health/grpc_health_v1", javaPackage: "io.grpc.health.v1", javaMultipleFiles: true, javaOuterClassname: "HealthProto", csharpNamespace: "Grpc.Health.V1" },
});
