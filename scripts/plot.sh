#!/usr/bin/env bash
# Regenerates docs/img/latency.png: sluice_rpc_bench's median round trip
# against payload size, Sluice beside its baselines. Installs gnuplot (only
# this script needs it, CI does not) and builds build/ if needed, then runs
# the full benchmark (a few minutes; a quiet machine gives a truer picture).
#
#   bash scripts/plot.sh [more sluice_rpc_bench flags, e.g. --budget_ms=3000]
#   bash scripts/plot.sh --replot    # the last run's CSV again, no benchmark
source "$(dirname "$0")/common.sh"
SLUICE_PACKAGES+=(gnuplot-nox)
sluice_install_packages
sluice_build "$SLUICE_ROOT/build" -DCMAKE_BUILD_TYPE=Release

csv="$SLUICE_ROOT/build/bench/rpc/latency.csv"
png="$SLUICE_ROOT/docs/img/latency.png"
load=""
if [[ "${1:-}" != "--replot" ]]; then
  load=", load $(cut -d' ' -f1-3 /proc/loadavg) before the run"
  "$SLUICE_ROOT/build/bench/rpc/sluice_rpc_bench" --csv="$csv" \
    --payloads=64,256,1024,4096,16384,65536,262144,1048576 "$@" >/dev/null
fi

# The cases in the order the benchmark wrote them; the machine, for the caption.
cases=$(tail -n +2 "$csv" | cut -d, -f1 | awk '!seen[$0]++' | tr '\n' ' ')
machine="$(nproc) CPUs, kernel $(uname -r)$load, $(date -r "$csv" +%F)"
mkdir -p "$(dirname "$png")"
gnuplot -e "csv='$csv'; png='$png'; cases='$cases'; machine='$machine'" /dev/stdin <<'GNUPLOT'
set terminal pngcairo size 900,560 font "sans,11"
set output png
set datafile separator ","
set title "Round trip, client and server in two processes (median)"
set label 1 "sluice\\_rpc\\_bench --csv; ".machine at graph 0.01, graph -0.14 font ",8"
set bmargin 5
set logscale xy
set xrange [45:1.5e6]
set xlabel "payload"
set ylabel "latency (µs)"
set xtics ("64 B" 64, "256 B" 256, "1 KiB" 1024, "4 KiB" 4096, "16 KiB" 16384, \
           "64 KiB" 65536, "256 KiB" 262144, "1 MiB" 1048576)
set grid xtics ytics mytics lc rgb "#dddddd"
set key top left
# One case's rows per line (a filtered-out row would break the line).
plot for [c in cases] "< awk -F, -v c=".c." '$1 == c' ".csv using 2:4 \
     with linespoints lw 2 pt 7 ps 0.8 title c
GNUPLOT
echo "wrote $png from $csv"
