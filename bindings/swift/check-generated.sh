#!/usr/bin/env bash
# Checks the generated Swift bindings as far as a machine without a Swift toolchain can:
#  1. the three files uniffi writes exist and the modulemap exposes TetherFFI.h as the
#     TetherFFI module that Tether.swift imports;
#  2. TetherFFI.h compiles as C11 (gcc, -Wall -Werror; clang's nullability qualifiers
#     defined away);
#  3. a C program taking the address of every function the header declares links and
#     runs against libtether.so: every symbol the Swift side will call exists;
#  4. every FFI symbol Tether.swift calls is declared in the header.
# What it cannot check: that Tether.swift compiles, and the iOS (staticlib) build.
# Usage: bindings/swift/check-generated.sh <generated swift dir> <path to libtether.so>
set -euo pipefail
DIR="$1"
LIB="$2"
fail() { echo "check-generated: $*" >&2; exit 1; }

for f in Tether.swift TetherFFI.h TetherFFI.modulemap; do
  [ -s "$DIR/$f" ] || fail "missing or empty: $DIR/$f"
done
grep -q '^module TetherFFI {' "$DIR/TetherFFI.modulemap" || fail "modulemap does not declare module TetherFFI"
grep -q 'header "TetherFFI.h"' "$DIR/TetherFFI.modulemap" || fail "modulemap does not name TetherFFI.h"
grep -q 'import TetherFFI' "$DIR/Tether.swift" || fail "Tether.swift does not import TetherFFI"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
NULLABILITY=(-D_Nullable= -D_Nonnull= -D_Null_unspecified=)

echo '#include "TetherFFI.h"' > "$WORK/header.c"
gcc -std=c11 -Wall -Wextra -Werror "${NULLABILITY[@]}" -I "$DIR" -fsyntax-only "$WORK/header.c" \
  || fail "TetherFFI.h does not compile as C11"

# Every function the header declares: "<return type> <name>(" at the start of a line.
grep -oE '^[A-Za-z_][A-Za-z0-9_ ]*[ *]((uniffi|ffi)_tether_[A-Za-z0-9_]+)\(' "$DIR/TetherFFI.h" \
  | sed -E 's/.*[ *]((uniffi|ffi)_tether_[A-Za-z0-9_]+)\($/\1/' | sort -u > "$WORK/declared"
[ -s "$WORK/declared" ] || fail "no FFI functions found in TetherFFI.h"
{
  echo '#include "TetherFFI.h"'
  echo '#include <stdio.h>'
  echo 'static void *const symbols[] = {'
  sed 's/.*/    (void *)\&&,/' "$WORK/declared"
  echo '};'
  echo 'int main(void) {'
  echo '    for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) if (!symbols[i]) return 1;'
  echo '    printf("%zu\n", sizeof symbols / sizeof symbols[0]);'
  echo '    return 0;'
  echo '}'
} > "$WORK/symbols.c"
LIBDIR="$(cd "$(dirname "$LIB")" && pwd)"
gcc -std=c11 "${NULLABILITY[@]}" -I "$DIR" "$WORK/symbols.c" -L "$LIBDIR" -ltether -Wl,-rpath,"$LIBDIR" \
  -o "$WORK/symbols" || fail "the header declares functions libtether.so does not export"
linked="$("$WORK/symbols")" || fail "the symbol check program failed"

grep -oE '(uniffi|ffi)_tether_[A-Za-z0-9_]+' "$DIR/Tether.swift" | sort -u > "$WORK/used"
missing="$(comm -23 "$WORK/used" "$WORK/declared")"
[ -z "$missing" ] || fail "Tether.swift calls functions TetherFFI.h does not declare: $missing"

echo "swift bindings: header compiles as C11; $linked FFI functions link against libtether.so; Tether.swift uses $(wc -l < "$WORK/used") of them"
