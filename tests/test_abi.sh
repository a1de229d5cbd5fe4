#!/usr/bin/env bash
# The ABI promise (README, "ABI"): libioloop.so exports exactly the
# functions include/ioloop.h declares, all public iol_ names (no iol__
# internal one), under the version node IOLOOP_0, with the soname
# libioloop.so.0; and iol_version() answers what the header says.
# Usage: test_abi.sh BUILD_ROOT SOURCE_ROOT
set -euo pipefail
build=$1 src=$2
lib=$build/libioloop.so
fail=0

# Defined dynamic symbols, without the version node itself (type A).
exported=$(nm -D --defined-only "$lib" | awk '$2 != "A" {print $3}')
bad=$(grep -v '^iol_[a-z0-9][a-z0-9_]*@@IOLOOP_0$' <<<"$exported" || true)
if [ -n "$bad" ]; then
  echo "exported but not public iol_ names under IOLOOP_0:"; echo "$bad"; fail=1
fi

# What the header declares, comments stripped by the preprocessor.
# Names bound by an asm label (the status codes' *_v2 entry points) are
# declared too, under the label's name.
pre=$(cc -E -P -I"$src/include" "$src/include/ioloop.h")
declared=$( { grep -oE '\biol_[a-z0-9_]+[[:space:]]*\(' <<<"$pre" | tr -d '( \t'
  grep -oE '__asm__\("iol_[a-z0-9_]+"\)' <<<"$pre" | sed 's/__asm__("\(.*\)")/\1/'; } | sort -u)
names=$(sed 's/@.*//' <<<"$exported" | sort -u)
if [ "$(wc -l <<<"$declared")" -lt 50 ]; then
  echo "found only $(wc -l <<<"$declared") declarations in ioloop.h"; fail=1
fi
extra=$(comm -13 <(echo "$declared") <(echo "$names"))
missing=$(comm -23 <(echo "$declared") <(echo "$names"))
[ -z "$extra" ] || { echo "exported, not declared in ioloop.h:"; echo "$extra"; fail=1; }
[ -z "$missing" ] || { echo "declared in ioloop.h, not exported:"; echo "$missing"; fail=1; }

soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = libioloop.so.0 ] || { echo "soname '$soname', want libioloop.so.0"; fail=1; }

# iol_version() of the shared library against the header's macros.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/v.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <ioloop.h>
int main(void)
{
    if (iol_version() != IOL_VERSION_HEX || strcmp(iol_version_string(), IOL_VERSION_STRING) != 0) {
        printf("iol_version %#x '%s', header %#x '%s'\n", iol_version(), iol_version_string(),
               IOL_VERSION_HEX, IOL_VERSION_STRING);
        return 1;
    }
    return 0;
}
C
# A sanitizer build's library needs the same runtime in the program.
san=()
undef=$(nm -D --undefined-only "$lib")
grep -q '__asan_' <<<"$undef" && san+=(-fsanitize=address)
grep -q '__ubsan_' <<<"$undef" && san+=(-fsanitize=undefined)
grep -q '__tsan_' <<<"$undef" && san+=(-fsanitize=thread)
cc "${san[@]}" -o "$tmp/v" "$tmp/v.c" -I"$src/include" -L"$build" -lioloop -Wl,-rpath,"$build"
"$tmp/v" || fail=1

[ $fail -eq 0 ] && echo "ABI: $(wc -l <<<"$names") public symbols, soname $soname"
exit $fail
