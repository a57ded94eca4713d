#!/usr/bin/env bash
# Zips an XCFramework the way SwiftPM's binaryTarget(url:checksum:) takes it (the
# .xcframework directory at the top of the zip) and writes its SHA-256, which is the
# checksum SwiftPM checks (`swift package compute-checksum` prints the same), to
# <zip>.sha256 (sha256sum format) and stdout. build-xcframework.sh calls it.
# Usage: ios/zip-xcframework.sh <path/to/TetherFFI.xcframework> <out.zip>
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 <path/to/Name.xcframework> <out.zip>" >&2; exit 2; }
XCF="$1"
case "$2" in /*) OUT="$2" ;; *) OUT="$PWD/$2" ;; esac
[ -d "$XCF" ] || { echo "zip-xcframework: $XCF is not a directory" >&2; exit 1; }
case "$XCF" in *.xcframework | *.xcframework/) ;; *) echo "zip-xcframework: $XCF is not an .xcframework" >&2; exit 1 ;; esac
[ -f "$XCF/Info.plist" ] || { echo "zip-xcframework: $XCF has no Info.plist" >&2; exit 1; }
XCF="${XCF%/}"
mkdir -p "$(dirname "$OUT")"
rm -f "$OUT" "$OUT.sha256"
# -X: no extra file attributes, -y: symlinks kept as links (framework bundles use them).
(cd "$(dirname "$XCF")" && zip -q -r -X -y "$OUT" "$(basename "$XCF")")
if command -v sha256sum >/dev/null 2>&1; then
  SUM="$(sha256sum "$OUT" | cut -d' ' -f1)"
else
  SUM="$(shasum -a 256 "$OUT" | cut -d' ' -f1)"
fi
echo "$SUM  $(basename "$OUT")" > "$OUT.sha256"
echo "$SUM"
