#!/usr/bin/env bash
# On macOS with Xcode: builds the SDK as a static library for iOS devices and simulators
# (profile release-mobile, Cargo.toml), generates the Swift bindings, packages
# TetherFFI.xcframework for Package.swift and Tether.podspec, and zips it for a release:
# build/TetherFFI.xcframework.zip and its SHA-256 (build/TetherFFI.xcframework.zip.sha256,
# also printed), which set-release.sh writes into Package.swift and Tether.podspec.
# Needs: rustup target add aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios.
# Not run on the CI machine (Linux, no Xcode, no Swift): see README.md. The zip step
# (zip-xcframework.sh) is tested there on a stand-in XCFramework.
# Usage: ios/build-xcframework.sh [--debug]
set -euo pipefail
cd "$(dirname "$0")"
IOS="$PWD"
ROOT="$(cd .. && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PROFILE=release-mobile
CARGO_FLAGS=(--profile release-mobile)
if [ "${1:-}" = "--debug" ]; then PROFILE=debug; CARGO_FLAGS=(); fi

cd "$ROOT"
for target in aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios; do
  cargo build --locked -p tether --lib --target "$target" "${CARGO_FLAGS[@]}"
done

# The bindings come from the host build: uniffi's metadata is the same for every target.
cargo build --locked -p tether --lib
rm -rf "$IOS/build" "$IOS/TetherFFI.xcframework" "$IOS/Sources/Tether/Generated"
mkdir -p "$IOS/build/headers" "$IOS/build/ios-simulator" "$IOS/Sources/Tether/Generated"
cargo run --locked -q -p uniffi-bindgen -- generate "$TARGET_DIR/debug/libtether.dylib" \
  --language swift --out-dir "$IOS/build/swift"
"$ROOT/bindings/swift/check-generated.sh" "$IOS/build/swift" "$TARGET_DIR/debug/libtether.dylib"
cp "$IOS/build/swift/Tether.swift" "$IOS/Sources/Tether/Generated/Tether.swift"
cp "$IOS/build/swift/TetherFFI.h" "$IOS/build/headers/TetherFFI.h"
cp "$IOS/build/swift/TetherFFI.modulemap" "$IOS/build/headers/module.modulemap"

# One library per platform: the two simulator architectures go into one fat archive.
lipo -create \
  "$TARGET_DIR/aarch64-apple-ios-sim/$PROFILE/libtether.a" \
  "$TARGET_DIR/x86_64-apple-ios/$PROFILE/libtether.a" \
  -output "$IOS/build/ios-simulator/libtether.a"
xcodebuild -create-xcframework \
  -library "$TARGET_DIR/aarch64-apple-ios/$PROFILE/libtether.a" -headers "$IOS/build/headers" \
  -library "$IOS/build/ios-simulator/libtether.a" -headers "$IOS/build/headers" \
  -output "$IOS/TetherFFI.xcframework"
SUM="$("$IOS/zip-xcframework.sh" "$IOS/TetherFFI.xcframework" "$IOS/build/TetherFFI.xcframework.zip")"
echo "ios: TetherFFI.xcframework and Sources/Tether/Generated/Tether.swift are ready (swift build / Xcode)"
echo "ios: release zip build/TetherFFI.xcframework.zip, sha256 $SUM (set-release.sh --zip build/TetherFFI.xcframework.zip ...)"
