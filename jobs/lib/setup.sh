# Shared by tests/run.sh and jobs/demo.sh: install missing Debian packages, configure and build.
# Source it, then call: rs_install_packages PKG...; rs_build [extra cmake args]
# Environment: RESAE_BUILD_DIR (default build), RESAE_JOBS (default: number of cores),
# RESAE_SKIP_INSTALL=1 (never call apt-get).

RESAE_ROOT=${RESAE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
RESAE_BUILD_DIR=${RESAE_BUILD_DIR:-$RESAE_ROOT/build}
RESAE_JOBS=${RESAE_JOBS:-$(nproc 2>/dev/null || echo 2)}

RESAE_BUILD_PKGS=(gcc make cmake pkg-config libopenmpi-dev openmpi-bin libscalapack-openmpi-dev
  libopenblas-dev libhdf5-openmpi-dev hdf5-tools libyaml-dev libcmocka-dev libcjson-dev liblinear-dev libdnnl-dev)
RESAE_PY_PKGS=(python3 python3-h5py python3-numpy python3-yaml python3-sklearn python3-matplotlib procps)

rs_say() { printf '==> %s\n' "$*"; }

# Install only the packages that are missing; 'apt-get update' once, and only if needed.
rs_install_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && { rs_say "packages: all ${#@} present"; return 0; }
  if [ "${RESAE_SKIP_INSTALL:-0}" = 1 ]; then
    echo "error: missing Debian packages: ${missing[*]} (RESAE_SKIP_INSTALL=1 is set; install them with apt-get)" >&2
    return 1
  fi
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "error: missing packages ${missing[*]}; run as root or install them with apt-get" >&2; return 1; }
    sudo=(sudo)
  fi
  rs_say "installing missing packages: ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || return 1
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
    >/dev/null || { echo "error: apt-get install ${missing[*]} failed" >&2; return 1; }
}

# Configure (Release, warnings as errors) and build into $RESAE_BUILD_DIR.
rs_build() {
  rs_say "configuring in $RESAE_BUILD_DIR"
  cmake -S "$RESAE_ROOT" -B "$RESAE_BUILD_DIR" -DCMAKE_BUILD_TYPE=${RESAE_BUILD_TYPE:-Release} \
    -DRESAE_WERROR=ON "$@" >"$RESAE_BUILD_DIR.configure.log" 2>&1 \
    || { cat "$RESAE_BUILD_DIR.configure.log" >&2; echo "error: cmake configure failed" >&2; return 1; }
  rs_say "building with $RESAE_JOBS jobs"
  cmake --build "$RESAE_BUILD_DIR" -j "$RESAE_JOBS" >"$RESAE_BUILD_DIR.build.log" 2>&1 \
    || { tail -50 "$RESAE_BUILD_DIR.build.log" >&2; echo "error: build failed (full log: $RESAE_BUILD_DIR.build.log)" >&2; return 1; }
}

# After rs_build: when OPENBLAS_CORETYPE, preset before this script, names kernels this CPU cannot run
# (a site's SkylakeX on an AVX2 node), resae re-executes itself with the CPU's best set; so must
# everything else this script starts that loads OpenBLAS (the C tests, numpy in analysis/). Export that set.
rs_blas_env() {
  local line core old
  line=$("$RESAE_BUILD_DIR/resae" version 2>/dev/null |
    grep -o 'resae set OPENBLAS_CORETYPE=[A-Za-z]* in place of OPENBLAS_CORETYPE=[^;]*' || true)
  [ -n "$line" ] || return 0
  core=${line#resae set OPENBLAS_CORETYPE=}; core=${core%% *}
  old=${line##*in place of OPENBLAS_CORETYPE=}
  rs_say "OPENBLAS_CORETYPE=$old selects kernels this CPU cannot run: using OPENBLAS_CORETYPE=$core here"
  export OPENBLAS_CORETYPE=$core
}

# Environment for running resae under mpirun on one machine (root allowed, oversubscription,
# one BLAS thread per rank when ranks share cores).
rs_mpi_env() {
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  export OMPI_MCA_btl=self,vader OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1
  # single-machine launch: no ssh/rsh agent needed
  export OMPI_MCA_plm=isolated
}
