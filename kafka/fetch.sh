#!/usr/bin/env bash
# Assemble the Kafka 3.9.1 broker classpath from Maven Central into a cache
# outside git. Idempotent: a no-op once the broker jar is present.
# Needs: Java 17+, Maven 3.8+. Override the cache with OTP_KAFKA_HOME.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
home="${OTP_KAFKA_HOME:-$HOME/.cache/otp-service/kafka-3.9.1}"
lib="$home/lib"

if [ -f "$lib/kafka_2.13-3.9.1.jar" ]; then
  echo "$lib"
  exit 0
fi

command -v mvn >/dev/null || { echo "fetch.sh: mvn not found (apt-get install maven)" >&2; exit 1; }
command -v java >/dev/null || { echo "fetch.sh: java not found (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }

# Fill a sibling dir and rename it into place, so an interrupted download never
# leaves a half-filled lib dir that the check above would accept.
tmp="$home/lib.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$home"
mvn -B -q -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$tmp" >&2
test -f "$tmp/kafka_2.13-3.9.1.jar" || { echo "fetch.sh: kafka jar missing after mvn" >&2; exit 1; }
# A concurrent fetch may have won the race; then keep its (identical) copy,
# which a running broker may already be reading.
if [ ! -f "$lib/kafka_2.13-3.9.1.jar" ]; then
  rm -rf "$lib"
  mv -T "$tmp" "$lib"
fi
echo "$lib"
