#!/usr/bin/env bash
# The project's own set-up and entry points. Usage:
#   scripts/dev.sh setup   install the system packages the build needs (libclang, a C++ compiler)
#   scripts/dev.sh run     set up, build, and run the demo on ./.remdb-demo
#   scripts/dev.sh test    set up, build, and run the whole test suite (cargo's tests, then
#                          the end-to-end tests of the shell and the Flight SQL server)
#   scripts/dev.sh e2e     only the end-to-end tests (Python: ADBC Flight SQL, pexpect)
#   scripts/dev.sh python  build the Python package rem_db (python/) into the project's
#                          virtualenv, type-check it (mypy --strict) and run its tests
#   scripts/dev.sh bench-python  the Python package against the Rust library and LanceDB
#                          on the same data (benches/python; arguments go to bench.py)
#   scripts/dev.sh bench-serve  `remdb serve` under load through ADBC: another tenant's point
#                          query while long statements run, and the peak RSS of a large
#                          INSERT ... SELECT under --memory-limit-mib 64 (benches/serve;
#                          arguments go to load.py)
#   scripts/dev.sh soak    writers and readers on several tenants for minutes through the
#                          library, then the invariants (REMDB_SOAK_SECS, REMDB_SOAK_TENANTS,
#                          REMDB_SOAK_READERS; benches/remdb/soak.rs), and the crash loop
#                          at 500 rounds (REMDB_CRASH_ROUNDS; tests/integration/crash.rs)
#   scripts/dev.sh compare remdb side by side with SQLite, DuckDB, LanceDB, usearch and
#                          hnswlib on the same generated data (benches/compare; sizes from
#                          REMDB_BENCH_ROWS, REMDB_VEC_ROWS, REMDB_VEC_QUERIES; arguments
#                          go to compare.py), then the plots in docs/plots (plots.py)
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

have_libclang() {
  # bindgen (RocksDB's bindings) loads libclang itself (libclang.so or libclang-NN.so),
  # not libclang-cpp, which some images ship alone: match the real library only.
  ldconfig -p 2>/dev/null | grep -qE '[[:space:]]libclang(-[0-9.]+)?\.so' ||
    ls /usr/lib/llvm-*/lib/libclang.so /usr/lib/llvm-*/lib/libclang-[0-9]*.so* >/dev/null 2>&1
}

setup() {
  local missing=()
  have_libclang || missing+=(libclang-dev)
  command -v c++ >/dev/null 2>&1 || missing+=(g++)
  command -v make >/dev/null 2>&1 || missing+=(make)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing system packages: ${missing[*]}" >&2
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install the Rust toolchain (https://rustup.rs) first" >&2
    exit 1
  fi
  setup_python
}

# The end-to-end tests' client libraries and the Python package's build and test tools,
# pinned, in a virtualenv of the project.
VENV=.venv-e2e
PY_PACKAGES=(adbc-driver-flightsql==1.13.0 adbc-driver-manager==1.13.0 pyarrow==26.0.1 pytest==9.2.0
  pexpect==4.9.0 maturin==1.16.0 numpy==2.4.6 pandas==3.1.1 mypy==2.4.1)

setup_python() {
  if ! command -v python3 >/dev/null 2>&1; then
    echo "installing system packages: python3 python3-venv" >&2
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    if ! python3 -m venv "$VENV" 2>/dev/null; then
      echo "installing system packages: python3-venv" >&2
      as_root apt-get update -qq
      DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$VENV"
      python3 -m venv "$VENV"
    fi
  fi
  if ! "$VENV/bin/python" -c 'import adbc_driver_flightsql, pyarrow, pytest, pexpect, maturin, numpy, pandas, mypy' 2>/dev/null; then
    echo "installing the end-to-end tests' Python packages into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
  fi
}

e2e() {
  cargo build --quiet --bin remdb
  REMDB_BIN="${CARGO_TARGET_DIR:-target}/debug/remdb" \
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/e2e
}

# The Python package: built by maturin into the virtualenv (dev profile, in the shared
# target directory, so the library's dependencies are not compiled again), then
# type-checked and tested.
python_package() {
  VIRTUAL_ENV="$PWD/$VENV" PATH="$PWD/$VENV/bin:$PATH" \
    "$VENV/bin/maturin" develop --quiet --manifest-path python/Cargo.toml
  (cd python && "../$VENV/bin/mypy")
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider python/tests
}

# The comparison: pinned packages in their own virtualenv, remdb in release, the data
# exported by the bench binary, then benches/compare/compare.py.
compare_venv() {
  local venv=.venv-compare
  # hnswlib is built from source: it needs Python's headers.
  if [ ! -f "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ]; then
    echo "installing system packages: python3-dev" >&2
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-dev >/dev/null
  fi
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      --requirement benches/compare/requirements.txt; then
    echo "could not install the comparison's packages (benches/compare/requirements.txt)" >&2
    exit 1
  fi
}

compare() {
  local venv=.venv-compare
  compare_venv
  cargo build --release --quiet --bin remdb
  local target="${CARGO_TARGET_DIR:-target}"
  local data="$target/compare-data"
  cargo bench --quiet --bench remdb -- export "$data"
  # The tenant layouts' memory, for the tenants-against-memory plot.
  cargo bench --quiet --bench remdb -- layouts | tee "$target/layouts.md"
  "$venv/bin/python" benches/compare/compare.py --data "$data" \
    --remdb "$target/release/remdb" --json docs/plots/compare-results.json \
    --plots docs/plots --tenants "$target/layouts.md" "$@"
}

# The Python package's bench: rem_db built in release into the comparison's virtualenv,
# beside LanceDB, against the Rust library on the same data (benches/python/bench.py).
bench_python() {
  local venv=.venv-compare
  compare_venv
  VIRTUAL_ENV="$PWD/$venv" PATH="$PWD/$venv/bin:$PATH" \
    "$venv/bin/maturin" develop --release --quiet --manifest-path python/Cargo.toml
  local data="${CARGO_TARGET_DIR:-target}/compare-data"
  cargo bench --quiet --bench remdb -- export "$data"
  "$venv/bin/python" benches/python/bench.py --data "$data" "$@"
}

# The server under load (benches/serve/load.py), with the end-to-end tests' ADBC client.
bench_serve() {
  cargo build --release --quiet --bin remdb
  "$VENV/bin/python" benches/serve/load.py --remdb "${CARGO_TARGET_DIR:-target}/release/remdb" "$@"
}

case "${1:-}" in
  setup) setup ;;
  run)
    setup
    shift
    if [ $# -eq 0 ]; then set -- demo; fi
    cargo run --quiet --bin remdb -- "$@"
    ;;
  test)
    setup
    shift
    cargo test "$@"
    # A filtered run (arguments given) is cargo's only.
    if [ $# -eq 0 ]; then
      e2e
      python_package
    fi
    ;;
  e2e)
    setup
    e2e
    ;;
  python)
    setup
    python_package
    ;;
  bench-python)
    setup
    shift
    bench_python "$@"
    ;;
  bench-serve)
    setup
    shift
    bench_serve "$@"
    ;;
  soak)
    setup
    cargo bench --quiet --bench remdb -- soak
    REMDB_CRASH_ROUNDS="${REMDB_CRASH_ROUNDS:-500}" \
      cargo test --quiet --test integration -- crash::kill_nine
    ;;
  compare)
    setup
    shift
    compare "$@"
    ;;
  *)
    echo "usage: scripts/dev.sh setup|run [remdb args]|test [cargo test args]|e2e|python|bench-python [args]|bench-serve [args]|soak|compare [args]" >&2
    exit 2
    ;;
esac
