#!/usr/bin/env bash
# buf breaking: the current protos against the API as last released
# (api/released.binpb; api/README.md says why an image and how to refresh it).
# Findings listed in api/accepted-changes.txt are reviewed, intended changes;
# any other finding fails.
set -euo pipefail
cd "$(dirname "$0")/.."
current=$(mktemp --suffix=.binpb)
trap 'rm -f "$current"' EXIT
npx buf build --path proto/otp -o "$current"
if out=$(npx buf breaking "$current" --against api/released.binpb 2>&1); then
  echo "buf breaking: no change breaks the released API"
  exit 0
fi
# "otp/v1/otp.proto:45:5:RPC ..." -> "RPC ..."
findings=$(printf '%s\n' "$out" | sed -E 's/^[^:]+:[0-9]+:[0-9]+://')
unexpected=$(printf '%s\n' "$findings" | grep -vxF -f <(grep -v '^$' api/accepted-changes.txt) || true)
if [ -n "$unexpected" ]; then
  printf '%s\n' "$out"
  echo "buf breaking: the changes above break the API as released (api/released.binpb); list reviewed, intended ones in api/accepted-changes.txt" >&2
  exit 1
fi
echo "buf breaking: only the accepted changes of api/accepted-changes.txt"
