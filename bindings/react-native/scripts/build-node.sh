#!/usr/bin/env bash
# Builds the package's Node entry point, lib/node/index.js (`exports["."].node`): the
# package's TypeScript bundled (esbuild) over ubrn's N-API bindings. Those bindings are
# generated here with the library found at run time, not at this machine's path: the
# file TETHER_NODE_LIBRARY names (a host build of libtether), else libtether next to
# lib/node/index.js. React Native does not use it (Metro reads src/, see package.json).
# Run by `npm pack` through prepack. Needs what scripts/gen-bindings builds.
set -euo pipefail
cd "$(dirname "$0")/.."
PKG="$PWD"
ROOT="$(cd ../.. && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
LIB="$TARGET_DIR/debug/libtether.so"
UBRN="$TARGET_DIR/ubrn-cli/debug/uniffi-bindgen-react-native"
for f in "$LIB" "$UBRN"; do
  [ -f "$f" ] || { echo "build-node: $f is missing: run scripts/gen-bindings first" >&2; exit 1; }
done

OUT="$PKG/build/node-bindings"
rm -rf "$OUT" lib/node
(cd "$ROOT" && "$UBRN" generate napi bindings --library "$LIB" --ts-dir "$OUT" --lib-colocated --no-format)
# The colocated lookup, with the override read from the environment.
FFI="$OUT/tether-ffi.ts"
MARK='      callerUrl: import.meta.url,'
grep -qxF "$MARK" "$FFI" || { echo "build-node: no '$MARK' in $FFI (ubrn changed its output?)" >&2; exit 1; }
sed -i "s|^$MARK\$|$MARK\n      override: process.env.TETHER_NODE_LIBRARY \|\| undefined,|" "$FFI"
grep -q 'override: process.env.TETHER_NODE_LIBRARY' "$FFI" || { echo "build-node: patching $FFI failed" >&2; exit 1; }

node scripts/bundle-node.mjs "$OUT/index.ts" lib/node/index.js
echo "build-node: lib/node/index.js"
