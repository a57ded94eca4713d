#!/usr/bin/env bash
# Fills a release into Package.swift (the binaryTarget's URL and checksum) and
# Tether.podspec (version, URL and SHA-256 of the XCFramework zip): the step between
# uploading the zip build-xcframework.sh made and tagging the Swift repository.
# The checksum is computed from the zip itself (SwiftPM's checksum is its SHA-256).
# Usage: ios/set-release.sh --version <x.y.z> --url <https URL of the zip> --zip <zip>
#        [--ios-dir <dir holding Package.swift and Tether.podspec>]   (default: ios/)
set -euo pipefail
DIR="$(cd "$(dirname "$0")" && pwd)"
VERSION="" URL="" ZIP=""
while [ $# -gt 0 ]; do
  case "$1" in
    --version) VERSION="${2:-}"; shift 2 ;;
    --url) URL="${2:-}"; shift 2 ;;
    --zip) ZIP="${2:-}"; shift 2 ;;
    --ios-dir) DIR="${2:-}"; shift 2 ;;
    *) echo "usage: $0 --version <x.y.z> --url <url> --zip <zip> [--ios-dir <dir>]" >&2; exit 2 ;;
  esac
done
fail() { echo "set-release: $*" >&2; exit 1; }
[[ "$VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || fail "--version must look like 1.2.3 (got '$VERSION')"
[[ "$URL" =~ ^https://[^[:space:]\"\'\\]+\.zip$ ]] || fail "--url must be an https URL of a .zip without quotes or spaces (got '$URL')"
[ -f "$ZIP" ] || fail "--zip: no file '$ZIP'"
# The listing is read whole before it is searched: `grep -q` on a pipe stops reading at
# the first match, and unzip's next write would then die of SIGPIPE (a failure under
# pipefail) whenever the listing is longer than what grep had read.
LISTING="$(unzip -Z1 "$ZIP" 2>/dev/null)" || fail "$ZIP is not a zip archive"
grep -qxF 'TetherFFI.xcframework/Info.plist' <<<"$LISTING" || fail "$ZIP has no TetherFFI.xcframework/Info.plist at its top"
PKG="$DIR/Package.swift" SPEC="$DIR/Tether.podspec"
[ -f "$PKG" ] && [ -f "$SPEC" ] || fail "no Package.swift and Tether.podspec in $DIR"
if command -v sha256sum >/dev/null 2>&1; then
  SUM="$(sha256sum "$ZIP" | cut -d' ' -f1)"
else
  SUM="$(shasum -a 256 "$ZIP" | cut -d' ' -f1)"
fi

# Edits copies and moves them in place only when every line was found: a release is
# written whole or not at all.
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cp "$PKG" "$WORK/Package.swift"
cp "$SPEC" "$WORK/Tether.podspec"
# Replaces the one line matching <pattern> in <file> with <line>; fails unless exactly one matches.
set_line() {
  local file="$1" pattern="$2" line="$3" n
  n="$(grep -cE "$pattern" "$file" || true)"
  [ "$n" = 1 ] || fail "$(basename "$file"): expected one line matching /$pattern/, found $n"
  LINE="$line" PATTERN="$pattern" perl -i -pe 's/.*/$ENV{LINE}/ if /$ENV{PATTERN}/' "$file"
}
set_line "$WORK/Package.swift" '^let releaseURL = ".*"$' "let releaseURL = \"$URL\""
set_line "$WORK/Package.swift" '^let releaseChecksum = ".*"$' "let releaseChecksum = \"$SUM\""
set_line "$WORK/Tether.podspec" "^  s\.version = '.*'$" "  s.version = '$VERSION'"
set_line "$WORK/Tether.podspec" "^  xcframework_url = '.*'$" "  xcframework_url = '$URL'"
set_line "$WORK/Tether.podspec" "^  xcframework_sha256 = '.*'$" "  xcframework_sha256 = '$SUM'"
cat "$WORK/Package.swift" > "$PKG"
cat "$WORK/Tether.podspec" > "$SPEC"
echo "set-release: $VERSION, $URL, sha256 $SUM written to $PKG and $SPEC"
