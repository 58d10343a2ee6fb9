#!/usr/bin/env bash
# prefixbench: vLLM server, with_prefix_cache (generated; only the prefix-caching flag differs between modes)
set -euo pipefail
PORT="${1:-8000}"
export VLLM_SERVER_DEV_MODE=1
exec .venv-server/bin/python -m vllm.entrypoints.openai.api_server \
  --model resources/models/SmolLM2-135M-Instruct \
  --served-model-name smollm2-135m-instruct \
  --host 127.0.0.1 \
  --port "$PORT" \
  --max-model-len 4096 \
  --dtype bfloat16 \
  --enable-prompt-tokens-details \
  --gpu-memory-utilization 0.90 \
  --max-num-seqs 64 \
  --enable-prefix-caching
