import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

// The V8 flags the service runs with (BENCHMARKS.md, "Node flags") are set in
// two places a deployment reads: `npm start` and the container's CMD. The
// bench starts the service with npm start's flags, so what was measured is
// what the image runs only while the two agree.

const root = new URL("../../", import.meta.url);
const start = (JSON.parse(readFileSync(new URL("package.json", root), "utf8")) as { scripts: { start: string } }).scripts.start;
const dockerfile = readFileSync(new URL("Dockerfile", root), "utf8");

describe("start command", () => {
  it("the Dockerfile's CMD is npm start's command, flags included", () => {
    const cmd = /^CMD (\[.*\])\s*$/m.exec(dockerfile);
    expect(cmd, "an exec-form CMD line").not.toBeNull();
    expect(JSON.parse(cmd![1]!)).toEqual(start.trim().split(/\s+/));
  });

  it("runs node with the GC settings for one core per process", () => {
    expect(start).toMatch(/^node .*--single-threaded-gc .*dist\/bin\/service\.js$/);
  });
});
