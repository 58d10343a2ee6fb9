#!/usr/bin/env bash
# How the published GPU reference numbers were made on a GPU machine that reaches no package registry
# (vLLM and the pipeline's measuring dependencies carried as wheels, see ../shared/device/README.md):
# runs the pipeline's own rules up to `measure` for one config, then packs what they wrote into $OUT.
# Aggregation, charts and the report are rendered afterwards on any machine with ./run.sh's environment.
#   bash scripts/device_sweep.sh CONFIG NAME
set -euo pipefail
config=$1 name=$2
out=${OUT:-/tmp/out}
mkdir -p .venv-server/bin "$out"
printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v python3)" > .venv-server/bin/python  # the configs' server python
chmod +x .venv-server/bin/python
export VLLM_CACHE_ROOT=${VLLM_CACHE_ROOT:-/tmp/vllm-cache}  # torch.compile cache shared by both servers
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/$name.gpu.txt"
t0=$(date +%s)
python3 -m snakemake --configfile "$config" --cores 4 --resources gpu=1 --scheduler greedy \
  results/raw/no_prefix_cache/server.json results/raw/with_prefix_cache/server.json 2>&1 | tail -n 25
echo "sweep_wall_s=$(( $(date +%s) - t0 ))" | tee "$out/$name.wall.txt"
# One more start of the cache-on server, now with a warm compile cache, to time it.
python3 - <<'PY' | tee -a "$out/$name.wall.txt"
import sys, time
sys.path.insert(0, "scripts")
from pathlib import Path
from prefixbench.server import ManagedServer
t0 = time.monotonic()
with ManagedServer(Path("results/servers/serve_slm_with_prefix_cache.sh"), "127.0.0.1", Path("results/logs/server_restart.log"), 900):
    print(f"restart_with_warm_compile_cache_s={time.monotonic() - t0:.1f}")
PY
tar czf "$out/$name.tar.gz" results .snakemake/metadata
ls -la "$out"
