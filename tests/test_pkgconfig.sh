#!/usr/bin/env bash
# What README "Using it" promises about pkg-config, checked on an install
# (meson install --destdir to a temporary directory; pkg-config told the
# prefix with --define-variable, as for any relocated install) and on the
# build tree (meson-uninstalled):
#  - --cflags is only -I<includedir> (ioloop.h includes only libc headers);
#  - `--static --libs` links a program with libioloop.a in it (no
#    libioloop.so needed), and it runs;
#  - `--libs` links against libioloop.so; with -Wl,-rpath the program
#    finds it under the private prefix, with LD_LIBRARY_PATH too, and
#    without either it does not.
# Usage: test_pkgconfig.sh BUILD_ROOT SOURCE_ROOT
set -euo pipefail
build=$(cd "$1" && pwd) src=$2
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unset LD_LIBRARY_PATH

# A sanitizer build's library needs the same runtime in the program.
san=()
undef=$(nm -D --undefined-only "$build/libioloop.so")
grep -q '__asan_' <<<"$undef" && san+=(-fsanitize=address)
grep -q '__ubsan_' <<<"$undef" && san+=(-fsanitize=undefined)
grep -q '__tsan_' <<<"$undef" && san+=(-fsanitize=thread)

cat >"$tmp/tiny.c" <<'C'
/* A loop, a callback, a job on the default executor: the static library
 * brings its dependencies (urcu, pthreads) along. */
#include <stdio.h>
#include <ioloop.h>

static int square(void *arg, void **result)
{
    *result = (void *)((long)arg * (long)arg);
    return 0;
}

static void on_square(iol_future *f, void *arg)
{
    void *v = NULL;
    iol_future_result(f, &v);
    iol_future_set_result(arg, v);
}

static int start_job(iol_loop *loop, iol_future *done, void *arg)
{
    (void)arg;
    iol_future *f;
    int r = iol_loop_run_in_executor(loop, NULL, square, (void *)7L, &f);
    if (r < 0)
        return r;
    r = iol_loop_add_future(loop, f, on_square, done);
    iol_future_unref(f);
    return r;
}

int main(void)
{
    iol_loop *loop;
    if (iol_version() != IOL_VERSION_HEX || iol_loop_new(&loop, NULL) < 0)
        return 1;
    void *v = NULL;
    int r = iol_loop_run_sync(loop, start_job, NULL, 10, &v);
    iol_loop_close(loop, false);
    if (r != 0 || (long)v != 49)
        return 1;
    printf("ioloop %s ok\n", iol_version_string());
    return 0;
}
C

needs_shared() { readelf -d "$1" | grep -q 'NEEDED.*\[libioloop\.so'; }

# check NAME PKG-CONFIG-COMMAND... : every promise above for one .pc.
check() {
  local name=$1; shift
  local pc=("$@")
  local cflags libdir
  cflags=$("${pc[@]}" --cflags ioloop)
  for bad in mit-krb5 pgm libxml2 -isystem; do
    if grep -q -- "$bad" <<<"$cflags"; then
      echo "$name: --cflags carries $bad: $cflags"; fail=1
    fi
  done
  if [ "$name" = install ] && [ "$(echo $cflags)" != "-I$root/include" ]; then
    echo "$name: --cflags is '$cflags', want -I$root/include"; fail=1
  fi

  # Static: libioloop.a from the -L of --libs, the rest of --static --libs
  # shared; --as-needed drops the libioloop.so that -lioloop names again.
  if ! cc "${san[@]}" -Wall -Werror -o "$tmp/static-$name" "$tmp/tiny.c" $cflags \
       -Wl,-Bstatic $("${pc[@]}" --libs ioloop) -Wl,-Bdynamic -Wl,--as-needed $("${pc[@]}" --static --libs ioloop); then
    echo "$name: static link with --static --libs failed"; fail=1
  elif needs_shared "$tmp/static-$name"; then
    echo "$name: the static program needs libioloop.so"; fail=1
  elif ! "$tmp/static-$name" >/dev/null; then
    echo "$name: the static program failed"; fail=1
  fi

  # Shared: with an rpath to libdir it runs as is.
  libdir=$("${pc[@]}" --variable=libdir ioloop)
  [ "$name" = build ] && libdir=$build # meson-uninstalled: the library sits at the top
  if ! cc "${san[@]}" -Wall -Werror -o "$tmp/rpath-$name" "$tmp/tiny.c" $cflags $("${pc[@]}" --libs ioloop) \
       -Wl,-rpath,"$libdir"; then
    echo "$name: shared link failed"; fail=1
  elif ! needs_shared "$tmp/rpath-$name"; then
    echo "$name: the shared program does not use libioloop.so"; fail=1
  elif ! "$tmp/rpath-$name" >/dev/null; then
    echo "$name: the shared program with rpath $libdir failed"; fail=1
  fi

  # Shared without an rpath: LD_LIBRARY_PATH, or it cannot start.
  cc "${san[@]}" -Wall -Werror -o "$tmp/plain-$name" "$tmp/tiny.c" $cflags $("${pc[@]}" --libs ioloop)
  if ! LD_LIBRARY_PATH=$libdir "$tmp/plain-$name" >/dev/null; then
    echo "$name: the shared program with LD_LIBRARY_PATH=$libdir failed"; fail=1
  fi
  if [ "$name" = install ] && "$tmp/plain-$name" >/dev/null 2>&1; then
    echo "$name: ran without rpath or LD_LIBRARY_PATH: is another libioloop.so.0 installed?"; fail=1
  fi
}

# The install. Its prefix is the build's; --destdir puts it under $tmp.
meson install -C "$build" --no-rebuild --quiet --destdir "$tmp/dest" >/dev/null
pcfile=$(find "$tmp/dest" -name ioloop.pc | head -n1)
[ -n "$pcfile" ] || { echo "meson install put no ioloop.pc under $tmp/dest"; exit 1; }
prefix=$(sed -n 's/^prefix=//p' "$pcfile")
root=$tmp/dest$prefix
check install env PKG_CONFIG_PATH="$(dirname "$pcfile")" pkg-config --define-variable=prefix="$root"

# The build tree.
check build env PKG_CONFIG_PATH="$build/meson-uninstalled" pkg-config

[ $fail -eq 0 ] && echo "pkg-config: install and build tree link static and shared programs"
exit $fail
