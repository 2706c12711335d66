#!/usr/bin/env bash
# Regenerates the Python messages, gRPC stubs and their .pyi stubs from proto/.
# Usage: scripts/gen.sh [OUTDIR]   (default: generated). The drift check generates into a
# temporary directory and compares, so the committed files always match the .proto.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-generated}"
py="${PYTHON:-.venv/bin/python}"
rm -rf "$out/datafly"
mkdir -p "$out"
"$py" -m grpc_tools.protoc -Iproto \
  --python_out="$out" --grpc_python_out="$out" \
  --plugin=protoc-gen-mypy="$(dirname "$py")/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="$(dirname "$py")/protoc-gen-mypy_grpc" \
  --mypy_out="$out" --mypy_grpc_out="$out" \
  $(find proto -name '*.proto' | sort)
# Packages, so setuptools finds them and mypy resolves them; py.typed marks them typed.
for d in "$out/datafly" "$out/datafly/amperity" "$out/datafly/amperity/v1"; do
  printf '"""Generated from proto/ by scripts/gen.sh: do not edit."""\n' > "$d/__init__.py"
done
touch "$out/datafly/py.typed"
