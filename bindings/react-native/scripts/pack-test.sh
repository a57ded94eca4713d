#!/usr/bin/env bash
# npm pack (prepack generates the native part and the Node entry), installs the tarball
# into a scratch project in a temp dir, and imports it through its Node entry point,
# checking the exported API. Fails on a missing export or a failed import.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(cd ../.. && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
npm pack --pack-destination "$TMP" >/dev/null 2>&1
TGZ="$(ls "$TMP"/*.tgz)"
tar -tzf "$TGZ" > "$TMP/files"
grep -qx 'package/TetherReactNative.podspec' "$TMP/files" || { echo "pack-test: no podspec in $TGZ" >&2; exit 1; }
grep -qx 'package/android/CMakeLists.txt' "$TMP/files" || { echo "pack-test: no android/CMakeLists.txt in $TGZ" >&2; exit 1; }
mkdir "$TMP/app"
cd "$TMP/app"
echo '{"name":"scratch","private":true,"type":"module"}' > package.json
npm install --no-audit --no-fund --prefer-offline "$TGZ" react@19.3.1 @ubjs/node@0.31.0-3 >/dev/null
TETHER_NODE_LIBRARY="$TARGET_DIR/debug/libtether.so" node --input-type=module -e "
const m = await import('@tether/react-native');
const missing = ['useWebSocket', 'useRoom', 'usePresence', 'TetherStore', 'TetherProvider', 'TetherException']
  .filter((k) => typeof m[k] !== 'function');
if (missing.length) { console.error('pack-test: missing exports: ' + missing.join(', ')); process.exit(1); }
console.log('pack-test: the installed tarball imports; exports checked');
"
