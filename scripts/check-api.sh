#!/usr/bin/env bash
# Part of `npm test` ("pretest", after the preflight): the API contract and
# the types, checked before any test runs. buf lint; buf breaking against the
# API as last released (api/check-breaking.sh, api/README.md); the committed
# generated code must be what `buf generate` makes from the protos; tsc over
# src, test, bench and scripts. (promtool's checks of the alert rules are a
# test: test/observability/.)
set -euo pipefail
cd "$(dirname "$0")/.."
npx buf lint
bash api/check-breaking.sh
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  npx buf generate
  git diff --exit-code --stat -- src/gen || { echo "src/gen is stale: run npm run generate and commit" >&2; exit 1; }
fi
npx tsc -p tsconfig.json --noEmit
