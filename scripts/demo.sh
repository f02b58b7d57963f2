#!/usr/bin/env bash
# Installs what is missing, builds, and runs the demo: it ends by itself.
source "$(dirname "$0")/common.sh"
sluice_install_packages
sluice_build "$SLUICE_ROOT/build" -DCMAKE_BUILD_TYPE=Release
exec "$SLUICE_ROOT/build/examples/sluice-demo"
