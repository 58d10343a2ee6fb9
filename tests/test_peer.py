"""The peer table (scripts/peer_compare.py): vLLM's own client's arguments and the generated comparison."""

from pathlib import Path

from prefixbench.peer import bench_serve_args, peer_table, spread


def _level(conc: int, ours: float, theirs: float, width: float) -> dict:
    def tool(m: float) -> dict:
        s = spread([m * (1 - width), m, m * (1 + width)])  # median m, range m +- width
        return {"mean_ttft_s": s, "p95_ttft_s": s, "mean_e2e_s": s, "p95_e2e_s": s}

    return {"concurrency": conc, "requests": max(32, 8 * conc), "prefixbench": tool(ours), "vllm_bench_serve": tool(theirs)}


def test_bench_serve_args_send_the_prompts_as_they_are_at_the_same_concurrency():
    args = bench_serve_args("http://127.0.0.1:8000", "m", "tok", Path("p.jsonl"), 128, 16, 32)
    pairs = dict(zip(args[::1], args[1::1]))
    assert pairs["--max-concurrency"] == "16" and pairs["--num-prompts"] == "128"
    assert pairs["--custom-output-len"] == "32" and pairs["--request-rate"] == "inf"
    assert {"--skip-chat-template", "--disable-shuffle", "--ignore-eos"} <= set(args)


def test_peer_table_compares_medians_with_each_tools_spread():
    result = {
        "server": {"script": "serve.sh", "version": "0.26.0", "model": "m"},
        "prompts": "results/prompts/large.jsonl",
        "reuse_pct": 100,
        "max_tokens": 32,
        "runs": 2,
        "levels": [_level(1, 0.0210, 0.0200, 0.10), _level(64, 0.100, 0.080, 0.05)],
    }
    md = peer_table(result)
    assert "vLLM 0.26.0" in md and "2 runs of each tool" in md
    assert "| 1 | 32 | prefixbench | 21.0 [18.9-23.1] |" in md
    assert "| 64 | 512 | vllm bench serve | 80.0 [76.0-84.0] |" in md
    # c=1: +5 % against spreads of 20 %: within; c=64: +25 % against 10 %: outside
    assert "c=1: prefixbench's median mean TTFT is +5.0 %" in md and "differ within the spread" in md
    assert "c=64: prefixbench's median mean TTFT is +25.0 %" in md and "differ outside the spread" in md
