# syntax=docker/dockerfile:1
# Build stage: compile TypeScript with the dev dependencies.
FROM node:24-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

# Runtime stage: production dependencies and compiled JavaScript only, as a non-root user.
FROM node:24-slim
ENV NODE_ENV=production GRPC_PORT=50051 HTTP_PORT=8080
WORKDIR /app
COPY --from=build --chown=node:node /app/node_modules ./node_modules
COPY --from=build --chown=node:node /app/dist ./dist
COPY --chown=node:node package.json ./
USER node
EXPOSE 50051 8080
# /readyz on OTP_HEALTH_PORT when set (plain HTTP), else on the HTTP port, over TLS (the server
# identified by TLS_CERT_FILE, across a renewal) when TLS is on: src/bin/healthcheck.ts.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "dist/bin/healthcheck.js"]
# SIGTERM reaches node directly (exec form), which drains calls before exiting.
# The V8 flags are npm start's (package.json; why: BENCHMARKS.md, "Node flags").
# Memory (issue 12): V8 grows the old generation up to 4x the live heap between
# full GCs when its limit is the default (~4 GiB): 500-730 MiB RSS after bursts
# for a ~35-55 MiB live heap. --max-old-space-size=160 (~3x the live heap) is
# where the old generation stops under bursts, and V8 keeps what it reached:
# 256 let one burst of cheap calls (CheckRateLimit, ~9,000/s) leave 310-380 MiB
# resident; 160 leaves ~250-280 MiB, with CPU per call unchanged within the noise
# (BENCHMARKS.md, stop 20). 16 MiB semi-spaces (32 MiB of young generation
# instead of 64) cost no measurable CPU per call: ~180 MiB at a steady 1,000
# calls/s on a fresh process, 155 MiB idle. To trade CPU for memory instead, see README,
# "Memory and CPU per process" (--no-parallel-scavenge for --single-threaded-gc).
CMD ["node", "--enable-source-maps", "--single-threaded-gc", "--max-semi-space-size=16", "--max-old-space-size=160", "--no-allocation-site-pretenuring", "dist/bin/service.js"]
