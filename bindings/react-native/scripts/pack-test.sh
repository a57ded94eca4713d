#!/usr/bin/env bash
# npm pack (prepack generates the native part and the Node entry), installs the tarball
# into a scratch project in a temp dir, and imports it through its Node entry point,
# checking the exported API, and loads its Expo config plugin by package name. Fails on a
# missing export or file, a failed import, or device libraries lost by prepack.
set -euo pipefail
cd "$(dirname "$0")/.."
PKG="$PWD"
ROOT="$(cd ../.. && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
TMP="$(mktemp -d)"
# Stand-ins for the device libraries a release builds first (`ubrn build android|ios`,
# not possible here): the tarball must carry them through prepack's regeneration. Only
# where there are none; removed afterwards.
FAKES=()
fake() { # <directory to create> <file in it>
  [ -e "$1" ] && return 0
  FAKES+=("$1")
  mkdir -p "$(dirname "$1/$2")" && echo "pack-test stand-in" > "$1/$2"
}
fake android/src/main/jniLibs arm64-v8a/libtether.a
fake build/TetherFFI.xcframework Info.plist
cleanup() {
  for d in "${FAKES[@]}"; do rm -rf "${PKG:?}/$d"; done
  rm -rf "$TMP"
}
trap cleanup EXIT
npm pack --pack-destination "$TMP" >/dev/null 2>&1
TGZ="$(ls "$TMP"/*.tgz)"
tar -tzf "$TGZ" > "$TMP/files"
for f in app.plugin.js plugin/withTether.cjs; do
  grep -qx "package/$f" "$TMP/files" || { echo "pack-test: no $f in $TGZ" >&2; exit 1; }
done
for d in "${FAKES[@]}"; do
  grep -q "^package/$d/" "$TMP/files" || { echo "pack-test: $d did not reach $TGZ (lost by prepack?)" >&2; exit 1; }
done
grep -qx 'package/TetherReactNative.podspec' "$TMP/files" || { echo "pack-test: no podspec in $TGZ" >&2; exit 1; }
grep -qx 'package/android/CMakeLists.txt' "$TMP/files" || { echo "pack-test: no android/CMakeLists.txt in $TGZ" >&2; exit 1; }
mkdir "$TMP/app"
cd "$TMP/app"
echo '{"name":"scratch","private":true,"type":"module"}' > package.json
npm install --no-audit --no-fund --prefer-offline "$TGZ" react@19.3.1 @ubjs/node@0.31.0-3 @expo/config-plugins@58.0.14 >/dev/null
# The Expo config plugin of the installed copy, found by package name as `expo prebuild` does.
node -e "
const { resolveConfigPluginFunctionWithInfo } = require('@expo/config-plugins/build/utils/plugin-resolver');
const { pluginFile, plugin } = resolveConfigPluginFunctionWithInfo(process.cwd(), '@tether/react-native');
const config = plugin({ name: 'scratch', slug: 'scratch', _internal: { projectRoot: process.cwd() } });
const mods = Object.keys(config.mods?.android ?? {}).concat(Object.keys(config.mods?.ios ?? {}));
if (!pluginFile.endsWith('node_modules/@tether/react-native/app.plugin.js') || mods.length !== 3) {
  console.error('pack-test: the Expo plugin of the installed tarball: ' + pluginFile + ', mods ' + mods);
  process.exit(1);
}
console.log('pack-test: the installed tarball\'s Expo plugin loads (' + mods.join(', ') + ')');
"
TETHER_NODE_LIBRARY="$TARGET_DIR/debug/libtether.so" node --input-type=module -e "
const m = await import('@tether/react-native');
const missing = ['useWebSocket', 'useRoom', 'usePresence', 'TetherStore', 'TetherProvider', 'TetherException']
  .filter((k) => typeof m[k] !== 'function');
if (missing.length) { console.error('pack-test: missing exports: ' + missing.join(', ')); process.exit(1); }
console.log('pack-test: the installed tarball imports; exports checked');
"
