#!/usr/bin/env bash
# Generates the package's native part with uniffi-bindgen-react-native (ubrn), the
# layout of ubrn's Turbo Module template, from the host libtether.so (uniffi's metadata
# is the same for every target):
#   ubrn generate jsi bindings      src/native/generated/*.ts (JSI flavour), cpp/generated/
#   ubrn generate jsi turbo-module  src/native/{index.tsx,NativeTetherReactNative.ts},
#                                   cpp/tether-react-native.{h,cpp}, android/ (CMakeLists.txt,
#                                   build.gradle, cpp-adapter.cpp, Kotlin module), ios/
#                                   (TetherReactNative.{h,mm}), TetherReactNative.podspec
# Nothing of it is committed (.gitignore): `npm pack` runs this through prepack, and
# scripts/test-bindings before compiling the C++. Needs what scripts/gen-bindings builds
# (libtether.so and ubrn's CLI). Respects CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
PKG="$PWD"
ROOT="$(cd ../.. && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
LIB="$TARGET_DIR/debug/libtether.so"
UBRN="$TARGET_DIR/ubrn-cli/debug/uniffi-bindgen-react-native"
for f in "$LIB" "$UBRN"; do
  [ -x "$f" ] || [ -f "$f" ] || { echo "gen-native: $f is missing: run scripts/gen-bindings first" >&2; exit 1; }
done

# The device libraries `ubrn build android` wrote (android/src/main/jniLibs/<abi>/) are kept
# across the regeneration, so that a release's `npm pack` carries them (build/, where
# `ubrn build ios` puts TetherFFI.xcframework, is not touched here).
KEEP="$(mktemp -d)"
restore_jni_libs() {
  if [ -d "$KEEP/jniLibs" ]; then mkdir -p android/src/main && rm -rf android/src/main/jniLibs && mv "$KEEP/jniLibs" android/src/main/; fi
  rm -rf "$KEEP"
}
trap restore_jni_libs EXIT
if [ -d android/src/main/jniLibs ]; then mv android/src/main/jniLibs "$KEEP/"; fi
rm -rf src/native cpp android ios TetherReactNative.podspec
# Bindings: run from the workspace root, as ubrn reads uniffi.toml through cargo metadata.
(cd "$ROOT" && "$UBRN" generate jsi bindings --library "$LIB" \
  --ts-dir "$PKG/src/native/generated" --cpp-dir "$PKG/cpp/generated" --no-format)
# Turbo Module glue: reads ubrn.config.yaml and package.json (name, codegenConfig).
"$UBRN" generate jsi turbo-module --config ubrn.config.yaml tether

for f in src/native/index.tsx src/native/NativeTetherReactNative.ts src/native/generated/tether.ts \
  cpp/generated/tether.cpp cpp/generated/tether.hpp cpp/tether-react-native.cpp cpp/tether-react-native.h \
  android/CMakeLists.txt android/build.gradle android/cpp-adapter.cpp ios/TetherReactNative.mm \
  TetherReactNative.podspec; do
  [ -s "$f" ] || { echo "gen-native: ubrn did not write $f" >&2; exit 1; }
done
echo "gen-native: JSI bindings and Turbo Module glue written (src/native, cpp, android, ios, TetherReactNative.podspec)"
