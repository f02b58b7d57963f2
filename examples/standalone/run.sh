#!/usr/bin/env bash
# run.sh SERVICEMANAGER TALLY_SERVER TALLY_CLIENT
#
# The standalone example across processes: a private service manager on a
# socket in a temporary directory, tally_server, then tally_client. Passes
# if the client's answers all match, and the server and the manager stop
# cleanly on SIGTERM.
set -euo pipefail
manager_bin=$1 server_bin=$2 client_bin=$3

dir=$(mktemp -d)
manager_pid="" server_pid=""
cleanup() {
  for pid in $server_pid $manager_pid; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
fail() {
  echo "run.sh: $*" >&2
  cat "$dir"/*.log >&2 || true
  exit 1
}

export SLUICE_SERVICEMANAGER=$dir/sm.sock
"$manager_bin" --socket="$SLUICE_SERVICEMANAGER" >"$dir/manager.log" 2>&1 &
manager_pid=$!
for _ in $(seq 100); do [[ -S $SLUICE_SERVICEMANAGER ]] && break; sleep 0.05; done
[[ -S $SLUICE_SERVICEMANAGER ]] || fail "no service manager socket"

"$server_bin" >"$dir/server.log" 2>&1 &
server_pid=$!

timeout 30 "$client_bin" >"$dir/client.log" 2>&1 || fail "tally_client failed"
cat "$dir/client.log"
grep -q "^tally_client: all answers match$" "$dir/client.log" || fail "client did not finish"

kill -TERM "$server_pid"
wait "$server_pid" || fail "tally_server exited with $?"
server_pid=""
cat "$dir/server.log"
# The server saw every Add the client made.
adds=$(sed -n 's/^tally_client: \([0-9]*\) adds$/\1/p' "$dir/client.log")
grep -q "^tally_server: $adds adds; stopped" "$dir/server.log" || fail "server did not see $adds adds"

kill -TERM "$manager_pid"
wait "$manager_pid" || fail "service manager exited with $?"
manager_pid=""
