#!/usr/bin/env bash
# The one set-up path for a fresh clone: system packages, Node dependencies with the native
# addons built the way this machine needs, addon load checks, and the Kafka jars.
# Called by `npm test`, `npm run demo`, `npm run bench` and .ci/run. Idempotent and quick when
# nothing changed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

# librdkafka's source build needs these (its prebuilt-binary download cannot reach the net here);
# redis-tools gives redis-cli/redis-benchmark, postgresql-client gives psql for checks and bench;
# prometheus gives promtool and the server for the alert tests (test/ops/), chromium the headless
# browser that loads the status page; the python3-* packages are what the Python client
# (clients/python/) needs, for /usr/bin/python3, which its tests run.
apt_packages=(zlib1g-dev libssl-dev libzstd-dev libsasl2-dev libcurl4-openssl-dev liblz4-dev
  redis-tools postgresql-client prometheus chromium
  python3-confluent-kafka python3-flatbuffers python3-websockets python3-redis python3-psycopg)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null; then
    die "missing Debian packages: ${missing[*]}. Install them as root (apt-get install -y ${missing[*]}) and rerun."
  fi
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo=sudo
  say "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq >/dev/null || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null \
    || die "apt-get could not install ${missing[*]}. Check the Debian mirror is reachable, then rerun."
fi

command -v node >/dev/null || die "Node.js is not installed (need 20.10+)."
node_major=$(node -p 'process.versions.node.split(".")[0]')
((node_major >= 20)) || die "Node.js $(node -v) is too old: tickstream needs 20.10 or newer."

# Native addons: librdkafka builds from source; CKJS_LINKING=dynamic links it against the
# Debian libs above, and node-gyp must find Node's headers locally instead of downloading them.
export CKJS_LINKING=dynamic
[[ -f /usr/include/node/node.h ]] && export npm_config_nodedir=/usr

stamp=node_modules/.tickstream-lock.sha
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  say "installing Node dependencies (npm ci; the librdkafka build takes ~1-2 min the first time)"
  # A registry that stops answering mid-download (EIDLETIMEOUT) fails one attempt, not the set-up.
  for attempt in 1 2 3; do
    npm ci --no-audit --no-fund --loglevel=error && break
    ((attempt < 3)) || die "npm ci failed 3 times (output above): check that the npm registry answers."
    say "npm ci failed (attempt $attempt of 3; output above); retrying in 10 s"
    sleep 10
  done
  echo "$want" >"$stamp"
fi

if ! node -e "require('@confluentinc/kafka-javascript')" 2>/tmp/tickstream-addon.err; then
  cat /tmp/tickstream-addon.err >&2
  die "the Kafka client's native addon (librdkafka) does not load. Remove node_modules and rerun 'npm run setup'; the build needs the Debian -dev packages listed in ops/setup.sh."
fi
if ! node -e "require('@trufflesuite/uws-js-unofficial')" 2>/tmp/tickstream-addon.err; then
  cat /tmp/tickstream-addon.err >&2
  die "the uWebSockets.js binary does not load on Node $(node -v) (glibc $(ldd --version | head -1 | awk '{print $NF}'))."
fi

bash "$here/kafka.sh" jars
