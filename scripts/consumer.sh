#!/usr/bin/env bash
# Sluice as a dependency, tried as a user would: the out-of-tree project in
# examples/standalone/ (its own schema, server and client) is configured,
# built and run across processes (its ctest: private service manager, server,
# client) four ways:
#   installed  against `cmake --install` into a temporary prefix, as a C++17
#              project (C++20 must come from Sluice's targets);
#   pkgconfig  its client compiled by hand with `pkg-config sluice` from that
#              prefix, run against the installed build's server;
#   fetched    Sluice built along through FetchContent of this checkout;
#   deb        against the Debian package (cpack), unpacked in a throw-away
#              root with dpkg -x; its Depends must resolve with apt.
# Run by scripts/test.sh, after build/ is built. On its own it installs what
# is missing and builds in build/ only what is installed (sluice_dist).
source "$(dirname "$0")/common.sh"
sluice_install_packages
SLUICE_TARGETS=sluice_dist sluice_build "$SLUICE_ROOT/build" -DCMAKE_BUILD_TYPE=Release

standalone="$SLUICE_ROOT/examples/standalone"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# consumer NAME [cmake args...]: configure, build and ctest the standalone
# project in $work/NAME. Builds the targets in $targets: the consumer's own,
# plus, when Sluice is built along, the one Sluice program its test runs
# (not all of Sluice's tools).
targets="tally_server tally_client"
consumer() {
  local name="$1"
  shift
  echo "==> consumer: $name"
  cmake -S "$standalone" -B "$work/$name" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
  # shellcheck disable=SC2086  # $targets is a list.
  ninja -C "$work/$name" -j "$SLUICE_JOBS" --quiet $targets
  ctest --test-dir "$work/$name" --output-on-failure --timeout 120
}

cmake --install "$SLUICE_ROOT/build" --prefix "$work/prefix" >/dev/null
consumer installed -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_CXX_STANDARD=17

echo "==> consumer: pkgconfig"
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
mkdir -p "$work/pkgconfig"
flatc --cpp --scoped-enums -o "$work/pkgconfig" "$standalone/tally.fbs"
"$work/prefix/bin/sluice-idlc" -o "$work/pkgconfig" "$standalone/tally.fbs"
# shellcheck disable=SC2046  # pkg-config's output is a list of flags.
g++ -O1 -I "$work/pkgconfig" "$standalone/tally_client.cc" -o "$work/pkgconfig/tally_client" \
  $(pkg-config --cflags --libs sluice)
"$standalone/run.sh" "$work/prefix/bin/sluice-servicemanager" \
  "$work/installed/tally_server" "$work/pkgconfig/tally_client" >/dev/null
echo "pkg-config client: passed"

targets="tally_server tally_client sluice-servicemanager" consumer fetched \
  -DTALLY_FETCH_SLUICE=ON -DFETCHCONTENT_SOURCE_DIR_SLUICE="$SLUICE_ROOT"

(cd "$SLUICE_ROOT/build" && cpack -G DEB -B "$work/deb" >/dev/null)
deb=$(echo "$work"/deb/sluice_*.deb)
echo "==> $(basename "$deb"): Depends: $(dpkg-deb -f "$deb" Depends)"
# What `apt-get install ./sluice_*.deb` would do, without doing it.
apt-get install --simulate -qq "$deb" >/dev/null
dpkg -x "$deb" "$work/root"
consumer deb -DCMAKE_PREFIX_PATH="$work/root/usr"
