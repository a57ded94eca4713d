#!/usr/bin/env bash
# The iOS release steps this machine can run without Xcode or Swift:
#   1. ios/zip-xcframework.sh on a stand-in XCFramework: the zip holds
#      TetherFFI.xcframework/ at its top with the same bytes, and the printed checksum and
#      the .sha256 file are the zip's SHA-256 (what SwiftPM's binaryTarget checks);
#   2. ios/set-release.sh on copies of ios/Package.swift and ios/Tether.podspec: URL,
#      checksum (the zip's SHA-256) and version written, nothing else changed, Package.swift
#      still parses (tree-sitter-swift), a second release replaces the first, bad input
#      is refused and leaves the files alone;
#   3. Package.swift and the podspec agree on the deployment target and the XCFramework.
# Run by scripts/test-bindings after `npm ci` here (tree-sitter-swift).
set -euo pipefail
cd "$(dirname "$0")"
IOS="$(cd ../../ios && pwd)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
fail() { echo "test-release: $*" >&2; exit 1; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

# 1. The zip.
XCF="$TMP/xcf/TetherFFI.xcframework"
mkdir -p "$XCF/ios-arm64/Headers" "$XCF/ios-arm64_x86_64-simulator"
printf '<?xml version="1.0"?>\n<plist version="1.0"><dict/></plist>\n' > "$XCF/Info.plist"
head -c 65536 /dev/urandom > "$XCF/ios-arm64/libtether.a"
head -c 65536 /dev/urandom > "$XCF/ios-arm64_x86_64-simulator/libtether.a"
echo '// header' > "$XCF/ios-arm64/Headers/TetherFFI.h"
ZIP="$TMP/out/TetherFFI.xcframework.zip"
SUM="$("$IOS/zip-xcframework.sh" "$XCF" "$ZIP")"
[[ "$SUM" =~ ^[0-9a-f]{64}$ ]] || fail "zip-xcframework printed '$SUM', not a SHA-256"
[ "$SUM" = "$(sha "$ZIP")" ] || fail "printed checksum $SUM is not the zip's SHA-256 $(sha "$ZIP")"
(cd "$TMP/out" && sha256sum -c --quiet TetherFFI.xcframework.zip.sha256) || fail "the .sha256 file does not check"
if unzip -Z1 "$ZIP" | grep -v '^TetherFFI\.xcframework/'; then fail "entries outside TetherFFI.xcframework/ (above)"; fi
mkdir "$TMP/unzipped"
(cd "$TMP/unzipped" && unzip -q "$ZIP")
diff -r "$XCF" "$TMP/unzipped/TetherFFI.xcframework" || fail "the zip's XCFramework differs from the input"
if "$IOS/zip-xcframework.sh" "$TMP/xcf" "$TMP/bad.zip" 2>/dev/null; then fail "zip-xcframework took a directory that is no .xcframework"; fi

# 2. Filling in a release.
mkdir "$TMP/ios" "$TMP/orig"
cp "$IOS/Package.swift" "$IOS/Tether.podspec" "$TMP/ios/"
cp "$IOS/Package.swift" "$IOS/Tether.podspec" "$TMP/orig/"
PKG="$TMP/ios/Package.swift" SPEC="$TMP/ios/Tether.podspec"
URL=https://downloads.example.invalid/tether/1.2.3/TetherFFI.xcframework.zip
"$IOS/set-release.sh" --ios-dir "$TMP/ios" --version 1.2.3 --url "$URL" --zip "$ZIP" >/dev/null
expect() { grep -qxF -- "$2" "$1" || fail "$(basename "$1") has no line: $2"; }
expect "$PKG" "let releaseURL = \"$URL\""
expect "$PKG" "let releaseChecksum = \"$SUM\""
expect "$PKG" '    : .binaryTarget(name: "TetherFFI", url: releaseURL, checksum: releaseChecksum)'
expect "$SPEC" "  s.version = '1.2.3'"
expect "$SPEC" "  xcframework_url = '$URL'"
expect "$SPEC" "  xcframework_sha256 = '$SUM'"
changed() { diff "$1" "$2" | grep -c '^>' || true; }
[ "$(changed "$TMP/orig/Package.swift" "$PKG")" = 2 ] || fail "set-release changed other lines of Package.swift: $(diff "$TMP/orig/Package.swift" "$PKG")"
[ "$(changed "$TMP/orig/Tether.podspec" "$SPEC")" = 3 ] || fail "set-release changed other lines of Tether.podspec: $(diff "$TMP/orig/Tether.podspec" "$SPEC")"
node parse-swift.cjs "$TMP/orig" >/dev/null || fail "ios/Package.swift does not parse"
node parse-swift.cjs "$TMP/ios" >/dev/null || fail "the filled-in Package.swift does not parse"

# A later release replaces the earlier one.
echo extra > "$XCF/ios-arm64/extra.txt"
# A real XCFramework lists thousands of entries (headers, modules, dSYMs): a listing far
# longer than a pipe buffer, which a check reading only up to its first match would break on.
mkdir "$XCF/ios-arm64/Headers/many"
for i in $(seq 1 3000); do echo "// $i" > "$XCF/ios-arm64/Headers/many/h$i.h"; done
SUM2="$("$IOS/zip-xcframework.sh" "$XCF" "$TMP/out2/TetherFFI.xcframework.zip")"
[ "$SUM2" != "$SUM" ] || fail "a different XCFramework gave the same checksum"
URL2=https://downloads.example.invalid/tether/1.3.0-rc.1/TetherFFI.xcframework.zip
"$IOS/set-release.sh" --ios-dir "$TMP/ios" --version 1.3.0-rc.1 --url "$URL2" --zip "$TMP/out2/TetherFFI.xcframework.zip" >/dev/null
expect "$PKG" "let releaseChecksum = \"$SUM2\""
expect "$SPEC" "  s.version = '1.3.0-rc.1'"
expect "$SPEC" "  xcframework_sha256 = '$SUM2'"
if grep -qF "$SUM" "$PKG" "$SPEC"; then fail "the first release's checksum is still there"; fi

# Bad input: refused, files untouched.
cp "$PKG" "$TMP/before.swift"; cp "$SPEC" "$TMP/before.podspec"
echo 'not a zip' > "$TMP/junk.zip"
(cd "$TMP/xcf" && mkdir -p Other.xcframework && echo x > Other.xcframework/Info.plist && zip -q -r "$TMP/other.zip" Other.xcframework)
refuse() {
  if "$IOS/set-release.sh" --ios-dir "$TMP/ios" "$@" >/dev/null 2>&1; then fail "set-release accepted: $*"; fi
}
refuse --version 1.2 --url "$URL" --zip "$ZIP"
refuse --version 1.2.3 --url "http://downloads.example.invalid/x.zip" --zip "$ZIP"
refuse --version 1.2.3 --url "https://downloads.example.invalid/x\".zip" --zip "$ZIP"
refuse --version 1.2.3 --url "$URL" --zip "$TMP/missing.zip"
refuse --version 1.2.3 --url "$URL" --zip "$TMP/junk.zip"
refuse --version 1.2.3 --url "$URL" --zip "$TMP/other.zip"
cmp -s "$PKG" "$TMP/before.swift" && cmp -s "$SPEC" "$TMP/before.podspec" || fail "a refused release changed the files"
# A Package.swift that lost its releaseURL line: refused rather than silently skipped.
grep -v '^let releaseURL' "$TMP/orig/Package.swift" > "$PKG"
refuse --version 1.2.3 --url "$URL" --zip "$ZIP"

# 3. Package.swift and the podspec describe the same package.
grep -qF 'platforms: [.iOS(.v15)' "$IOS/Package.swift" || fail "Package.swift: iOS platform is not .v15"
expect "$IOS/Tether.podspec" "  s.ios.deployment_target = '15.0'"
expect "$IOS/Tether.podspec" "  s.vendored_frameworks = 'TetherFFI.xcframework'"
grep -qF '.binaryTarget(name: "TetherFFI", path: "TetherFFI.xcframework")' "$IOS/Package.swift" || fail "Package.swift lost its local XCFramework mode"
echo "test-release: zip-xcframework.sh and set-release.sh checked (sha256 $SUM on a stand-in XCFramework)"
