import { getOption, type DescFile, type DescMessage } from "@bufbuild/protobuf";
import { field as fieldRules } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { RE2JS } from "@bufbuild/re2";
import { file_otp_v1_otp } from "../gen/otp/v1/otp_pb.js";

// How `pattern` rules are matched. protovalidate's default engine is a
// JavaScript port of RE2: linear time for any pattern, which is what a
// pattern taken from input needs, but it cost ~6% of a Verify's CPU and ~20%
// of its allocations (bench, CPU and heap profiles). Our patterns are
// constants of otp.proto, reviewed with it: anchored character classes with
// no ambiguous repetition, so they cannot backtrack badly, and the platform
// RegExp (with `u`, code points like RE2) answers exactly as RE2 does;
// test/unit/validation-patterns.test.ts checks both engines agree on every
// one of them. Any other pattern (none today) still goes to RE2.

/** Every `string.pattern` rule declared in the file's messages, nested ones included. */
export function declaredPatterns(file: DescFile): string[] {
  const out = new Set<string>();
  const visit = (message: DescMessage): void => {
    for (const f of message.fields) {
      const rules = getOption(f, fieldRules);
      if (rules.type.case === "string" && rules.type.value.pattern !== undefined && rules.type.value.pattern !== "") {
        out.add(rules.type.value.pattern);
      }
    }
    message.nestedMessages.forEach(visit);
  };
  file.messages.forEach(visit);
  return [...out];
}

const native = new Map(declaredPatterns(file_otp_v1_otp).map((p) => [p, new RegExp(p, "u")]));
const re2 = new Map<string, RE2JS>();

export function patternMatcher(pattern: string, against: string): boolean {
  const known = native.get(pattern);
  if (known) return known.test(against);
  let compiled = re2.get(pattern);
  if (!compiled) {
    compiled = RE2JS.compile(pattern);
    // Bounded, as protovalidate's own cache is: CEL can build patterns from input.
    if (re2.size >= 1024) re2.clear();
    re2.set(pattern, compiled);
  }
  return compiled.test(against);
}
