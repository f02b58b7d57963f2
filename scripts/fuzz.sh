#!/usr/bin/env bash
# Builds every fuzz target with clang (-fsanitize=fuzzer,address,undefined)
# and fuzzes each for SLUICE_FUZZ_SECONDS (default 60) on its seed corpus
# (fuzz/corpus/NAME) after replaying its regressions (fuzz/regressions/NAME).
# New corpus entries go to a scratch directory, never into the checkout; a
# crash leaves its input in build-fuzz/artifacts/ and fails the script.
source "$(dirname "$0")/common.sh"
sluice_install_packages

seconds="${SLUICE_FUZZ_SECONDS:-60}"
dir="$SLUICE_ROOT/build-fuzz"
if [[ ! -f "$dir/build.ninja" ]]; then
  cmake -S "$SLUICE_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_CXX_COMPILER=clang++ -DSLUICE_SANITIZE=address,undefined \
    -DSLUICE_BUILD_BENCH=OFF >/dev/null
fi
echo "==> building $(basename "$dir") (fuzzers only)"
ninja -C "$dir" -j "$SLUICE_JOBS" --quiet sluice_fuzzers

mkdir -p "$dir/artifacts"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
failed=0
while read -r name; do
  [[ -n "$name" ]] || continue
  bin="$dir/fuzz/$name"
  corpus="$SLUICE_ROOT/fuzz/corpus/$name"
  regressions="$SLUICE_ROOT/fuzz/regressions/$name"
  scratch="$(mktemp -d)"
  echo "==> fuzzing $name for ${seconds}s"
  if [[ -d "$regressions" ]] && compgen -G "$regressions/*" >/dev/null; then
    "$bin" -runs=0 "$regressions"/* >"$dir/artifacts/$name.log" 2>&1 ||
      { echo "!! $name fails a regression input"; tail -30 "$dir/artifacts/$name.log"; failed=1; }
  fi
  dirs=("$scratch")
  [[ -d "$corpus" ]] && dirs+=("$corpus")
  if ! "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2560 -print_final_stats=1 \
      -artifact_prefix="$dir/artifacts/$name-" "${dirs[@]}" >>"$dir/artifacts/$name.log" 2>&1; then
    echo "!! $name found a failing input (in $dir/artifacts/):"
    tail -40 "$dir/artifacts/$name.log"
    failed=1
  else
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$dir/artifacts/$name.log" |
      tr '\n' ' '
    echo
  fi
  rm -rf "$scratch"
done <"$dir/fuzzers.txt"
exit "$failed"
