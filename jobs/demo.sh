#!/usr/bin/env bash
# Install what is missing, build, and run the embedded demo experiment on 2 ranks.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/lib/setup.sh"
rs_install_packages "${RESAE_BUILD_PKGS[@]}" "${RESAE_PY_PKGS[@]}"
rs_build
"$RESAE_BUILD_DIR/resae" version
