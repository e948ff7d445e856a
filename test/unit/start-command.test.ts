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

  it("bounds V8's old generation, so RSS under load stays near the live heap (issue 12)", () => {
    // Without it V8 grows the old generation by up to 4x the live heap between
    // full GCs (RSS 500-730 MiB after saturation, live heap ~35-45 MiB).
    // 160 (~3x a busy live heap of 35-55 MiB): with 256, one burst left 310-380 MiB resident (BENCHMARKS.md, stop 20).
    expect(start).toMatch(/ --max-old-space-size=160 /);
    const relay = (JSON.parse(readFileSync(new URL("package.json", root), "utf8")) as { scripts: { relay: string } }).scripts.relay;
    expect(relay).toMatch(/ --max-old-space-size=256 /);
  });
});
