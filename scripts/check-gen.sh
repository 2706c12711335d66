#!/usr/bin/env bash
# Fails when regenerating from proto/ would change anything under generated/.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
scripts/gen.sh "$tmp" >/dev/null 2>&1
if ! diff -r -x __pycache__ "$tmp/datafly" generated/datafly; then
  echo "generated/ is out of date with proto/: run 'make gen' and commit the result." >&2
  exit 1
fi
echo "generated/ matches proto/"
