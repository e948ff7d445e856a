import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 180_000,
    // Two cores: integration files start real servers; more parallelism only adds contention.
    maxWorkers: 2,
    pool: "forks",
  },
});
