#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite, then
# builds and runs an out-of-tree consumer of Sluice (scripts/consumer.sh).
# With CI=true it also runs everything under ASan+UBSan, the runtime's tests
# under TSan (clang), each in its own build tree, and every libFuzzer target
# for SLUICE_FUZZ_SECONDS each (scripts/fuzz.sh).
source "$(dirname "$0")/common.sh"
sluice_install_packages

run_ctest() {
  local dir="$1"
  shift
  echo "==> testing $(basename "$dir")"
  ctest --test-dir "$dir" --output-on-failure -j "$SLUICE_JOBS" --timeout 300 "$@"
}

sluice_build "$SLUICE_ROOT/build" -DCMAKE_BUILD_TYPE=Release
run_ctest "$SLUICE_ROOT/build"

# Sluice as a dependency: installed, via pkg-config, FetchContent and the .deb.
bash "$SLUICE_ROOT/scripts/consumer.sh"

if [[ "${CI:-}" == "true" ]]; then
  sluice_build "$SLUICE_ROOT/build-asan" -DCMAKE_BUILD_TYPE=Debug \
    -DSLUICE_SANITIZE=address,undefined -DSLUICE_BUILD_BENCH=OFF
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    run_ctest "$SLUICE_ROOT/build-asan"

  sluice_build "$SLUICE_ROOT/build-tsan" -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_CXX_COMPILER=clang++ -DSLUICE_SANITIZE=thread -DSLUICE_BUILD_BENCH=OFF
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    run_ctest "$SLUICE_ROOT/build-tsan" -L runtime

  bash "$SLUICE_ROOT/scripts/fuzz.sh"
fi
