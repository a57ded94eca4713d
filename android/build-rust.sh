#!/usr/bin/env bash
# Builds libtether.so for the Android ABIs with cargo-ndk and generates the Kotlin
# bindings. Run by Gradle before each build (build.gradle.kts, preBuild), or by hand.
# Needs: the Android NDK (ANDROID_NDK_HOME), cargo-ndk 4 (cargo install cargo-ndk), and
# the Rust targets (rustup target add aarch64-linux-android armv7-linux-androideabi
# x86_64-linux-android). Not run on the CI machine, which has none of these.
# Usage: android/build-rust.sh [--release]
#   --release: the size-tuned profile `release-mobile` (Cargo.toml: LTO, one codegen
#   unit, opt-level "z", symbols stripped); without it, the debug profile.
set -euo pipefail
cd "$(dirname "$0")"
ANDROID_DIR="$PWD"
ROOT="$(cd .. && pwd)"

CARGO_FLAGS=()
if [ "${1:-}" = "--release" ]; then CARGO_FLAGS=(--profile release-mobile); fi
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac

command -v cargo-ndk >/dev/null 2>&1 || { echo "build-rust.sh: cargo-ndk is missing (cargo install cargo-ndk)" >&2; exit 1; }
[ -n "${ANDROID_NDK_HOME:-}" ] || { echo "build-rust.sh: ANDROID_NDK_HOME is not set (the Android NDK's directory)" >&2; exit 1; }

cd "$ROOT"
cargo ndk -t arm64-v8a -t armeabi-v7a -t x86_64 --platform 24 \
  -o "$ANDROID_DIR/build/rustJniLibs" build --locked -p tether --lib "${CARGO_FLAGS[@]}"

# The bindings come from the host build: uniffi reads its metadata from the library's
# symbol table, which the release-mobile profile strips, and the metadata is the same
# for every target. uniffi.toml plus `android = true` (the cleaner uses
# android.system.SystemCleaner).
cargo build --locked -p tether --lib -p uniffi-bindgen
mkdir -p "$ANDROID_DIR/build"
sed '/^\[bindings.kotlin\]$/a android = true' uniffi.toml > "$ANDROID_DIR/build/uniffi-android.toml"
rm -rf "$ANDROID_DIR/build/generated/uniffi"
"$TARGET_DIR/debug/uniffi-bindgen" generate "$TARGET_DIR/debug/libtether.so" --language kotlin \
  --config "$ANDROID_DIR/build/uniffi-android.toml" \
  --out-dir "$ANDROID_DIR/build/generated/uniffi" --no-format
