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
# /readyz on the HTTP port, over TLS (pinned to TLS_CERT_FILE) when TLS is on: src/bin/healthcheck.ts.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "dist/bin/healthcheck.js"]
# SIGTERM reaches node directly (exec form), which drains calls before exiting.
# The V8 flags are npm start's (package.json; why: BENCHMARKS.md, "Node flags").
CMD ["node", "--enable-source-maps", "--single-threaded-gc", "--max-semi-space-size=32", "--no-allocation-site-pretenuring", "dist/bin/service.js"]
