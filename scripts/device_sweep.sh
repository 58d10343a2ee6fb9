#!/usr/bin/env bash
# How the published GPU reference numbers are made on a GPU machine that reaches no package registry and
# allows commands of limited length (vLLM and the pipeline's measuring dependencies carried as wheels, see
# ../shared/device/README.md). Runs the pipeline's own measuring jobs for one config, one at a time in the
# DAG's order: the calibration start, each server lifetime in the interleaved (ABBA) order, the small-KV
# lifetimes. It starts the next job only if it should end before DEADLINE (epoch seconds, judged from the
# jobs before it), so a command never stops inside a lifetime; run it again in the same folder to go on.
# Then packs what the jobs wrote into $OUT/NAME.tar.gz. Aggregation, charts and the report are rendered
# afterwards on any machine with ./run.sh's environment (docs/results/README.md says how).
#   bash scripts/device_sweep.sh CONFIG NAME DEADLINE
# RESTORE=docs/results/.../run_outputs.tar.xz goes on from a published sweep on a bare machine: its outputs are
# unpacked first (a lifetime stopped midway is dropped), and once the prompts are rebuilt its finished jobs are
# marked up to date (snakemake --touch), so only the missing lifetimes run (and then the peer table).
# GPU: the one CUDA_VISIBLE_DEVICES names (two sweeps on a two-GPU host run side by side, one GPU each).
set -euo pipefail
config=$1 name=$2 deadline=$3
out=${OUT:-/tmp/out}
mkdir -p .venv-server/bin "$out" results/logs
if [[ ! -e .venv-server/bin/python ]]; then  # the configs' server python: this machine's, with vLLM on PYTHONPATH
  printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v python3)" > .venv-server/bin/python
  chmod +x .venv-server/bin/python
fi
export VLLM_CACHE_ROOT=${VLLM_CACHE_ROOT:-$PWD/.vllm-cache}  # torch.compile cache shared by this sweep's servers
gpu_select=()
[[ -n "${CUDA_VISIBLE_DEVICES:-}" ]] && gpu_select=(-i "$CUDA_VISIBLE_DEVICES")
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader "${gpu_select[@]}" > results/logs/device_gpu.txt 2>/dev/null || echo "no nvidia-smi" > results/logs/device_gpu.txt
python3 -c "import vllm; print('vllm', vllm.__version__)" >> results/logs/device_gpu.txt 2>/dev/null || true

# The measuring jobs in the order the DAG chains them (prefixbench.design, as rules/design.smk uses it).
mapfile -t jobs < <(python3 - "$config" <<'PY'
import sys, yaml
sys.path.insert(0, "scripts")
from prefixbench.design import kv_order, server_infos, slot_order
cfg = yaml.safe_load(open(sys.argv[1]))
bench = cfg["benchmark"]
slots = slot_order(bench.get("instances", 1), cfg["seed"])
has_kv = any(s.get("kind") == "kv_overflow" for s in (cfg.get("shapes") or {}).values())
main = (["results/calibration.json"] if bench.get("time_budget_s") else []) + server_infos(slots, kv_order(slots) if has_kv else [])
# The second KV tier's pair of lifetimes (rules/offload.smk), in the seed's order; OFFLOAD_ONLY=1 measures just them.
import os
from prefixbench.offload_plan import tier_order
offload = has_kv and (cfg["targets"].get(cfg["target"]) or {}).get("kv_offload")
tiers = [f"results/raw/with_prefix_cache/{t}/server.json" for t in tier_order(cfg["seed"])] if offload else []
print("\n".join(tiers if os.environ.get("OFFLOAD_ONLY") else main + tiers))
PY
)

finished_jobs() { for job in "${jobs[@]}"; do [[ -f $job ]] && echo "$job"; done; return 0; }

# Every call copies the tree afresh, so every input is newer than the outputs of the calls before: without the
# mtime trigger a finished lifetime stays finished (its params, code and inputs are still checked).
smk=(python3 -m snakemake --configfile "$config" --cores 4 --resources gpu=1 --scheduler greedy --rerun-incomplete
     --rerun-triggers params input software-env code)
"${smk[@]}" --unlock >/dev/null 2>&1 || true
if [[ -n "${RESTORE:-}" && ! -f results/.restored ]]; then
  tar xJf "$RESTORE"
  for info in "${jobs[@]}"; do  # a lifetime without its server.json was stopped midway: it runs again, whole
    [[ $info == */server.json && ! -f $info && -d $(dirname "$info") ]] && rm -rf "$(dirname "$info")"
  done
  echo "$RESTORE" > results/.restored
  echo "[$name] restored $(finished_jobs | wc -l) of ${#jobs[@]} measuring jobs from $RESTORE"
fi
# Every prompt file and server script first (CPU work: building the small-KV prompts took 2 min on the H200 host),
# so the lifetimes' durations are the servers' alone.
"${smk[@]}" --omit-from calibrate measure measure_kv offload_measure_notier offload_measure_cputier -- "${jobs[@]}" >> results/logs/device_sweep.log 2>&1 \
  || { echo "[$name] preparing prompts failed"; tail -n 15 results/logs/device_sweep.log; }
if [[ -f results/.restored && ! -f results/.touched ]]; then
  mapfile -t restored < <(finished_jobs)
  if (( ${#restored[@]} )); then
    "${smk[@]}" --touch -- "${restored[@]}" >> results/logs/device_sweep.log 2>&1 \
      || { echo "[$name] marking the restored jobs up to date failed"; tail -n 15 results/logs/device_sweep.log; exit 1; }
  fi
  touch results/.touched
fi
# How long the next job takes: the last one of its kind and cache setting (cache off runs longer), here or in an
# earlier run of this script; else the last one of its kind; else a first guess.
last_of() { { grep -E "$1" results/logs/device_sweep_times.txt 2>/dev/null || true; } | tail -n 1 | sed -E 's/.* took ([0-9]+)s/\1/'; }
guess_for() {
  local job=$1 kind='/i[0-9]+/server.json' first=${FIRST_LIFETIME_GUESS_S:-300} mode
  [[ $job == */kv/* ]] && kind='/kv/server.json' first=${FIRST_KV_GUESS_S:-150}
  [[ $job == */kv_*tier/* ]] && kind='/kv_[a-z]*tier/server.json' first=${FIRST_KV_GUESS_S:-150}
  mode=$(cut -d/ -f3 <<< "$job")
  local same; same=$(last_of "/$mode$kind took")
  local any; any=$(last_of "$kind took")
  echo "${same:-${any:-$first}}"
}
for job in "${jobs[@]}"; do
  [[ -f "$job" ]] && continue
  guess=$(guess_for "$job")
  now=$(date +%s)
  if (( now + guess * 115 / 100 > deadline )); then
    echo "[$name] stopping before $job: about ${guess}s needed, $((deadline - now))s left; run again to go on"
    break
  fi
  echo "[$name] $(date -u +%T) $job (about ${guess}s)"
  t0=$(date +%s)
  # SIGINT at the deadline: Snakemake stops the job, the job tears its server down; the next run redoes it.
  timeout -s INT $((deadline - now)) "${smk[@]}" -- "$job" >> "results/logs/device_sweep.log" 2>&1 \
    || { echo "[$name] $job did not finish (see results/logs/device_sweep.log)"; tail -n 15 results/logs/device_sweep.log; break; }
  echo "[$name] $job took $(( $(date +%s) - t0 ))s" | tee -a results/logs/device_sweep_times.txt
done
done_jobs=$(finished_jobs | wc -l)
echo "[$name] $done_jobs of ${#jobs[@]} measuring jobs done"
# Then, if time is left, on one cache-on server each: the A/A run of the paired design (both arms salted: it must
# claim nothing) and the peer check (prefixbench and `vllm bench serve` in balanced pairs of runs, an equivalence
# verdict per level), on the largest regime's fully shared prompts at the config's concurrency levels.
if (( done_jobs == ${#jobs[@]} )); then
  read -r served tokenizer regime levels < <(python3 - "$config" <<'PY'
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
model = cfg["targets"][cfg["target"]]["model"]
regime = max(cfg["regimes"], key=lambda r: cfg["regimes"][r]["prefix_tokens"])
print(model["served_name"], model["path"], regime, ",".join(str(c) for c in cfg["benchmark"]["concurrency"]))
PY
)
  max_tokens=$(python3 -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['benchmark'].get('max_tokens', 16))" "$config")
  now=$(date +%s)
  if [[ ! -f results/aa/server.json ]] && (( now + ${AA_GUESS_S:-180} <= deadline )); then
    echo "[$name] $(date -u +%T) A/A run on $regime at c=$levels"
    timeout -s INT $((deadline - now)) python3 scripts/aa_check.py --prompts "results/prompts/$regime.jsonl" \
      --concurrency ${levels//,/ } --requests "${AA_REQUESTS:-128}" --max-tokens "$max_tokens" --model "$served" \
      --out results/aa > results/logs/aa_check.log 2>&1 \
      && tail -n 4 results/logs/aa_check.log || echo "[$name] A/A run did not finish (results/logs/aa_check.log)"
  fi
  now=$(date +%s)
  if [[ ! -f results/peer_compare.json ]] && (( now + ${PEER_GUESS_S:-300} <= deadline )); then
    echo "[$name] $(date -u +%T) peer check on $regime at c=$levels"
    timeout -s INT $((deadline - now)) python3 scripts/peer_compare.py --script results/servers/serve_slm_with_prefix_cache.sh \
      --prompts "results/prompts/$regime.jsonl" --reuse 100 --concurrency ${levels//,/ } --pairs "${PEER_PAIRS:-10}" \
      --max-tokens "$max_tokens" --model "$served" --tokenizer "$tokenizer" --out results/peer_compare.json \
      > results/logs/peer_compare.log 2>&1 \
      && tail -n 8 results/logs/peer_compare.log || echo "[$name] peer check did not finish (results/logs/peer_compare.log)"
  fi
fi
tar czf "$out/$name.tar.gz" results $(ls -d .snakemake/metadata 2>/dev/null)
