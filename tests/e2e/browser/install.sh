#!/usr/bin/env bash
# Installs what the console's browser test needs, once per machine: Debian's chromium, and
# playwright-core and axe-core (exact versions, package-lock.json) into target/tools/browser.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tools="$here/../../../target/tools/browser"
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "chromium is missing and this user cannot install it: apt-get install chromium" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
fi
if ! cmp -s "$here/package-lock.json" "$tools/package-lock.json" \
  || [ ! -d "$tools/node_modules/playwright-core" ] || [ ! -d "$tools/node_modules/axe-core" ]; then
  mkdir -p "$tools"
  cp "$here/package.json" "$here/package-lock.json" "$tools/"
  (cd "$tools" && npm ci --no-audit --no-fund --loglevel=error)
fi
command -v chromium
