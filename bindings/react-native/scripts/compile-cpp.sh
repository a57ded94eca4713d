#!/usr/bin/env bash
# Compiles the generated C++ JSI glue (cpp/generated/tether.cpp, the Turbo Module's
# cpp/tether-react-native.cpp) with g++ against the JSI and CallInvoker headers of the
# react-native npm package (one tarball, pinned by version and integrity; its
# dependencies are not needed) and ubrn's C++ runtime headers. Fails when the C++ does
# not compile. Run scripts/gen-native.sh first. Not compiled: cpp-adapter.cpp (JNI,
# fbjni) and the iOS .mm (Objective-C++), which need the Android NDK / Xcode.
set -euo pipefail
cd "$(dirname "$0")/.."
PKG="$PWD"
RN_VERSION=0.88.1
RN_INTEGRITY='sha512-wajWcLZ93GCN7k4Uwh4CS4L2Ah8ohcvkOXnvIYmh4Yvuqho5j3APZ9qozK+nQrHWSgauq4h8D3HN5DKK84SrHA=='
[ -f cpp/generated/tether.cpp ] || { echo "compile-cpp: no cpp/generated/tether.cpp: run scripts/gen-native.sh first" >&2; exit 1; }
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack "react-native@$RN_VERSION" --json > pack.json 2>/dev/null)
node -e "const [p] = require('$TMP/pack.json'); if (p.integrity !== process.argv[1]) { console.error('compile-cpp: react-native tarball integrity ' + p.integrity + ', expected ' + process.argv[1]); process.exit(1); }" "$RN_INTEGRITY"
tar -xzf "$TMP/react-native-$RN_VERSION.tgz" -C "$TMP" package/ReactCommon
RC="$TMP/package/ReactCommon"
for src in cpp/generated/tether.cpp cpp/tether-react-native.cpp; do
  g++ -std=c++20 -c -Wall -Werror -fexceptions -frtti \
    -I "$RC/jsi" -I "$RC/callinvoker" -I "$RC" \
    -I "$PKG/node_modules/uniffi-bindgen-react-native/cpp/includes" -I cpp -I cpp/generated \
    "$src" -o "$TMP/$(basename "$src").o"
done
echo "compile-cpp: cpp/generated/tether.cpp and cpp/tether-react-native.cpp compile (g++, react-native $RN_VERSION JSI headers)"
