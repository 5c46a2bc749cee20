#!/usr/bin/env bash
# The project's own set-up and entry points. Usage:
#   scripts/dev.sh setup   install the system packages the build needs (libclang, a C++ compiler)
#   scripts/dev.sh run     set up, build, and run the demo on ./.remdb-demo
#   scripts/dev.sh test    set up, build, and run the whole test suite
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
    ;;
  *)
    echo "usage: scripts/dev.sh setup|run [remdb args]|test [cargo test args]" >&2
    exit 2
    ;;
esac
