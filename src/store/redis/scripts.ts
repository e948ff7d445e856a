import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

// The Lua scripts, read once at start-up. A line `--- @include "name"` pulls in
// lua/includes/<name>.lua (once per script), so fragments are shared, not copied.

export interface StoreScript {
  name: string;
  source: string;
  sha1: string;
  numberOfKeys: number;
}

const INCLUDE = /^--- @include "([\w-]+)"\s*$/gm;

// Next to this module in src/; the build (tsc) does not copy .lua files, so
// dist/store/redis/ falls back to the source tree.
function luaDirectory(): string {
  for (const candidate of ["./lua/", "../../../src/store/redis/lua/"]) {
    const dir = fileURLToPath(new URL(candidate, import.meta.url));
    if (existsSync(`${dir}issue.lua`)) return dir;
  }
  throw new Error("Lua scripts not found next to src/store/redis/scripts");
}

function expandIncludes(source: string, dir: string, seen: Set<string>): string {
  return source.replace(INCLUDE, (_line, name: string) => {
    if (seen.has(name)) return "";
    seen.add(name);
    return expandIncludes(readFileSync(`${dir}includes/${name}.lua`, "utf8"), dir, seen);
  });
}

function load(dir: string, name: string, numberOfKeys: number): StoreScript {
  const source = expandIncludes(readFileSync(`${dir}${name}.lua`, "utf8"), dir, new Set());
  return { name, source, numberOfKeys, sha1: createHash("sha1").update(source).digest("hex") };
}

function loadAll() {
  const dir = luaDirectory();
  return {
    issue: load(dir, "issue", 2),
    verify: load(dir, "verify", 2),
    resend: load(dir, "resend", 2),
    limits: load(dir, "limits", 1),
    deliveryReport: load(dir, "delivery-report", 2),
    find: load(dir, "find", 1),
    describe: load(dir, "describe", 1),
    inspect: load(dir, "inspect", 1),
    cancel: load(dir, "cancel", 2),
    callerBudgets: load(dir, "caller-budgets", 0),
    audit: load(dir, "audit", 1),
    prefixVerified: load(dir, "prefix-verified", 0),
    takeBack: load(dir, "take-back", 0),
    readOutbox: load(dir, "read-outbox", 1),
    ackOutbox: load(dir, "ack-outbox", 1),
    pruneConsumers: load(dir, "prune-consumers", 1),
  };
}

export const scripts = loadAll();
