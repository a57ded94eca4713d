#!/usr/bin/env bash
# Builds libtether.so for the Android ABIs with cargo-ndk and generates the Kotlin
# bindings from it. Run by Gradle before each build (build.gradle.kts, preBuild), or by
# hand. Needs: the Android NDK (ANDROID_NDK_HOME), cargo-ndk 4 (cargo install cargo-ndk),
# and the Rust targets (rustup target add aarch64-linux-android armv7-linux-androideabi
# x86_64-linux-android). Not run on the CI machine, which has none of these.
# Usage: android/build-rust.sh [--release]
set -euo pipefail
cd "$(dirname "$0")"
ANDROID_DIR="$PWD"
ROOT="$(cd .. && pwd)"

PROFILE=debug
CARGO_FLAGS=()
if [ "${1:-}" = "--release" ]; then PROFILE=release; CARGO_FLAGS=(--release); fi
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

cd "$ROOT"
cargo ndk -t arm64-v8a -t armeabi-v7a -t x86_64 --platform 24 \
  -o "$ANDROID_DIR/build/rustJniLibs" build --locked -p tether "${CARGO_FLAGS[@]}"

# Bindings from one of the Android libraries (the metadata is the same for every ABI),
# with uniffi.toml plus `android = true` (the cleaner uses android.system.SystemCleaner).
mkdir -p "$ANDROID_DIR/build"
sed '/^\[bindings.kotlin\]$/a android = true' uniffi.toml > "$ANDROID_DIR/build/uniffi-android.toml"
cargo run --locked -q -p uniffi-bindgen -- generate \
  "$TARGET_DIR/aarch64-linux-android/$PROFILE/libtether.so" --language kotlin \
  --config "$ANDROID_DIR/build/uniffi-android.toml" \
  --out-dir "$ANDROID_DIR/build/generated/uniffi" --no-format
