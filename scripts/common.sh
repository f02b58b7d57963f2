# Shared by scripts/demo.sh and scripts/test.sh: install what is missing,
# configure and build. Sourced, not run.
set -euo pipefail

SLUICE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SLUICE_JOBS="${SLUICE_JOBS:-$(nproc)}"

# Debian 12 packages the build needs. clang is for the TSan build only;
# dpkg-dev and file for cpack's Debian package (dpkg-shlibdeps finds its
# Depends), which scripts/consumer.sh builds.
SLUICE_PACKAGES=(
  g++ cmake ninja-build pkg-config git
  libabsl-dev libflatbuffers-dev flatbuffers-compiler libboost-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  clang libclang-rt-14-dev
  dpkg-dev file
  systemd  # systemd-socket-activate, for the socket-activation test
)

sluice_install_packages() {
  local missing=()
  for pkg in "${SLUICE_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$pkg")
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  echo "==> installing: ${missing[*]}"
  local sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# sluice_build DIR [cmake args...]: configure (once) and build into DIR;
# only the targets in $SLUICE_TARGETS if set, else everything.
sluice_build() {
  local dir="$1"
  shift
  if [[ ! -f "$dir/build.ninja" ]]; then
    cmake -S "$SLUICE_ROOT" -B "$dir" -G Ninja "$@" >/dev/null
  fi
  echo "==> building $(basename "$dir")"
  # shellcheck disable=SC2086  # a list of targets.
  ninja -C "$dir" -j "$SLUICE_JOBS" --quiet ${SLUICE_TARGETS:-}
}
