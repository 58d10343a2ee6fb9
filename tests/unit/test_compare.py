"""prefixbench compare: two runs' results.json side by side (prefixbench.compare)."""

from __future__ import annotations

import copy
import json
import math

import polars as pl
import pytest
import yaml
from helpers import ROOT

from prefixbench.compare import between, compare_results, compare_runs, floor_between, main, setup_changes
from prefixbench.results_file import Setup, build_results, dumps

SMOL = ROOT / "docs/results/h200-2026-12-01-paired-smollm2"
PHI3 = ROOT / "docs/results/h200-2026-12-01-paired"
KEY = "cache_effect/ttft/large/100/c1/point"


def result_of(run) -> dict:
    from prefixbench.verdicts import read_contrasts

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    target = cfg["targets"]["gpu"]
    info = {"mode": "with_prefix_cache", "instance": 1, "vllm_version": "0.26.0", "hardware": {"gpu": "NVIDIA H200"}}
    return build_results(
        Setup("gpu", target["model"], target["block_size"], cfg["benchmark"]["max_tokens"], target["dtype"], cfg),
        [info],
        pl.read_csv(run / "summary.csv", infer_schema_length=None),
        pl.read_csv(run / "speedup.csv", infer_schema_length=None),
        read_contrasts(run / "summary.csv", run / "speedup.csv"),
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple:
    root = tmp_path_factory.mktemp("runs")
    out = []
    for name, run in (("smol", SMOL), ("phi3", PHI3)):
        (root / name).mkdir()
        (root / name / "results.json").write_text(dumps(result_of(run)))
        out.append(root / name)
    return tuple(out)


def contrast(ratio, lo=None, hi=None, floor=None, reason="x") -> dict:
    return {
        "ratio": ratio,
        "lo": lo,
        "hi": hi,
        "floor_lo": floor[0] if floor else None,
        "floor_hi": floor[1] if floor else None,
        "reason": reason,
    }


def test_between_combines_independent_intervals_on_the_log_scale():
    """Two intervals of log half-width w each: the ratio's is w·√2 wide, centred on the ratio of the effects."""
    w = 0.1
    a = contrast(2.0, 2.0 * math.exp(-w), 2.0 * math.exp(w))
    b = contrast(1.5, 1.5 * math.exp(-w), 1.5 * math.exp(w))
    x = between(a, b)
    assert x.ratio == pytest.approx(4 / 3)
    assert math.log(x.hi / x.ratio) == pytest.approx(w * math.sqrt(2))
    assert math.log(x.ratio / x.lo) == pytest.approx(w * math.sqrt(2))
    assert x.verdict == "differs: A's effect larger"
    assert between(b, a).verdict == "differs: B's effect larger"


def test_between_says_no_difference_with_its_mde_and_refuses_without_intervals():
    same = between(contrast(1.5, 1.3, 1.7), contrast(1.45, 1.25, 1.7))
    assert same.lo < 1 < same.hi and same.verdict == f"no difference larger than {same.mde_pct:.0f}%"
    assert between(contrast(1.5), contrast(1.4, 1.3, 1.5)).verdict == "not compared: no interval in A"
    assert between(contrast(None), contrast(1.4, 1.3, 1.5)).verdict == "not compared: A has no effect"
    failed = contrast(1.5, 1.4, 1.6, reason="the regime's 0%-reuse control found a difference")
    assert between(contrast(1.5, 1.4, 1.6), failed).verdict.startswith("not compared: the paired design failed in B")


def test_lifetime_contrasts_must_clear_both_floors():
    """Across server lifetimes, a ratio of effects inside what the two runs' A/A floors allow is not a difference."""
    a = contrast(1.3, 1.25, 1.35, floor=(0.9, 1.2))
    b = contrast(1.1, 1.08, 1.12, floor=(0.95, 1.1))
    assert floor_between(a, b) == pytest.approx((0.9 / 1.1, 1.2 / 0.95))
    assert between(a, b).verdict.startswith("no difference beyond the runs' A/A floors")
    assert between(contrast(1.3, 1.25, 1.35), contrast(1.1, 1.08, 1.12)).verdict == "differs: A's effect larger"


def test_setup_changes_lists_only_what_differs():
    a = {"engine": {"name": "vllm", "version": "0.26.0"}, "hardware": {"gpu": "H200"}, "block_size": 16, "lifetimes": []}
    b = copy.deepcopy(a) | {"engine": {"name": "vllm", "version": "0.27.0"}, "lifetimes": [{"kv_blocks": 5}]}
    assert setup_changes(a, b) == [
        ("engine.version", "0.26.0", "0.27.0"),
        ("lifetimes", "0 lifetime(s)", "1 lifetime(s), KV blocks 5"),
    ]
    assert setup_changes(a, copy.deepcopy(a)) == []


def test_published_runs(runs):
    """The two published H200 runs: SmolLM2 (real weights) against Phi-3 (random weights)."""
    text = compare_runs(*runs)
    assert text.startswith("# Comparing two prefixbench runs: A = `smol`, B = `phi3`")
    row = next(line for line in text.splitlines() if line.startswith("| large 1024 tok · 100% reuse · c=1 | ttft |"))
    # 1.52 (1.44-1.61) against 1.65 (1.58-1.73): the SmolLM2 run's TTFT cut is the smaller one
    assert "1.52× (1.44–1.61) faster" in row and "1.65× (1.58–1.73) faster" in row
    assert "0.92× (0.86–0.99)" in row and row.endswith("differs: B's effect larger |")
    assert "| model.weights | real | random |" in text and "| model.source | smollm2_package | dummy |" in text
    assert "engine.version" not in text  # the same vLLM in both


def test_points_in_one_run_only_are_listed(runs):
    a = json.loads((runs[0] / "results.json").read_text())
    b = copy.deepcopy(a)
    b["contrasts"] = [c for c in b["contrasts"] if c["key"] != KEY]
    text = compare_results(a, b)
    assert "## Measured only in A" in text and "- large 1024 tok · 100% reuse · c=1 (cache_effect, ttft): 1.52×" in text
    assert "Nothing: the two runs' setups are identical" in text


def test_main_writes_the_report_and_prints_its_path(runs, tmp_path, capsys):
    out = tmp_path / "cmp.md"
    assert main([str(runs[0]), str(runs[1]), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_text().startswith("# Comparing two prefixbench runs")
    assert "![Every contrast measured in both runs" in out.read_text() and out.with_suffix(".png").stat().st_size
    assert main([str(tmp_path / "nowhere"), str(runs[1])]) == 2
    assert "results.json not found" in capsys.readouterr().err
