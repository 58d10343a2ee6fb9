"""The ideal saving: prefill FLOPs a cached prefix removes, from the model's own configuration.

For a prompt of T tokens with C of them cached, a decoder of L layers, attention width a (heads x
head_dim), KV width d_kv and MLP width f does about 2·P·(T−C) FLOPs in its weight matmuls
(P = non-embedding parameters) and 2·L·a·(T²−C²) in causal attention.

TTFT is not all compute: every request also pays a fixed cost (HTTP, tokenization, scheduling, the
first decode step, a step outside the captured graph sizes...). So the model is
TTFT ≈ fixed + k·FLOPs(uncached), fitted on the cache-off points of different prompt lengths, and the
ideal warm TTFT is the cold one minus k·FLOPs(saved): what remains above it is time the cache could
not remove.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import OFF, ON


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    kv_hidden: int
    mlp: int
    gated_mlp: bool = True
    attn_width: int | None = None  # heads x head_dim; the hidden size where the config says nothing else

    @property
    def attn(self) -> int:
        return self.attn_width or self.hidden

    @property
    def params(self) -> int:
        """Non-embedding parameters in the matmuls (attention q/k/v/o + MLP)."""
        attn = 2 * self.hidden * self.attn + 2 * self.hidden * self.kv_hidden
        mlp = (3 if self.gated_mlp else 2) * self.hidden * self.mlp
        return self.layers * (attn + mlp)


def shape_from_config(config: dict) -> Shape:
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    kv_heads = config.get("num_key_value_heads") or heads
    return Shape(
        config["num_hidden_layers"],
        config["hidden_size"],
        kv_heads * head_dim,
        config["intermediate_size"],
        config.get("hidden_act", "silu") in ("silu", "swiglu", "gelu_pytorch_tanh"),
        heads * head_dim,
    )


def load_shape(model_dir: str | Path) -> Shape | None:
    path = Path(model_dir) / "config.json"
    return shape_from_config(json.loads(path.read_text())) if path.is_file() else None


def prefill_flops(shape: Shape, prompt_tokens: float, cached_tokens: float = 0.0) -> float:
    new = prompt_tokens - cached_tokens
    return 2 * shape.params * new + 2 * shape.layers * shape.attn * (prompt_tokens**2 - cached_tokens**2)


def ideal_ttft(
    cold_ttft_s: float, shape: Shape, prompt_tokens: float, cached_tokens: float, s_per_flop: float | None = None
) -> float:
    """The warm TTFT if the cache removed exactly the compute of the cached tokens.

    With a fitted cost per FLOP: cold minus the saved FLOPs' time (the fixed cost stays). Without one, the
    old upper bound: cold TTFT scaled by the share of FLOPs left (as if TTFT had no fixed cost)."""
    saved = prefill_flops(shape, prompt_tokens) - prefill_flops(shape, prompt_tokens, cached_tokens)
    if s_per_flop is not None:
        return cold_ttft_s - s_per_flop * saved
    return cold_ttft_s * prefill_flops(shape, prompt_tokens, cached_tokens) / prefill_flops(shape, prompt_tokens)


def fit_fixed_cost(samples: list[tuple[float, float]], shape: Shape) -> tuple[float, float] | None:
    """(fixed seconds, seconds per FLOP) from cold (prompt tokens, TTFT) samples of at least two lengths."""
    xs = [prefill_flops(shape, t) for t, _ in samples]
    ys = [y for _, y in samples]
    if len(samples) < 2 or max(xs) < 1.2 * min(xs):
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    k = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    if k <= 0:
        return None
    return my - k * mx, k


def achieved_share(cold_s: float, warm_s: float, ideal_s: float, fixed_s: float | None = None) -> float | None:
    """How much of the ideal TTFT saving the engine delivered (1 = all of it); None where the compute model does not
    explain the run: a warm TTFT below the fitted fixed cost, or a saving larger than the model allows."""
    if cold_s <= ideal_s or (fixed_s is not None and warm_s < fixed_s):
        return None
    share = (cold_s - warm_s) / (cold_s - ideal_s)
    return share if share <= 1.0 else None


def explained(row: dict) -> bool:
    """The compute model explains a row: its warm TTFT is not below the fitted fixed cost."""
    return row["fixed_s"] is None or row["warm_s"] >= row["fixed_s"]


def cold_samples(calibration_json: Path | None) -> list[tuple[float, float]]:
    """(prompt tokens, TTFT) of the calibration's cold requests, the short one included (none without a calibration):
    with the cache-off points, what ideal_rows fits the fixed cost on. The report and the ideal chart both read them
    here, so the chart's ideal bar is the fit the report's text states."""
    if calibration_json is None or not Path(calibration_json).is_file():
        return []
    reqs = json.loads(Path(calibration_json).read_text()).get("calibration", {}).get("requests", [])
    return [(r["prompt_tokens"], r["ttft_s"]) for r in reqs if r.get("prompt_tokens") and r.get("ttft_s")]


def ideal_rows(summary, shape: Shape, block_size: int, cold_samples: Sequence[tuple[float, float]] = ()) -> list[dict]:
    """Per regime, at full reuse and the lowest concurrency (closed loop): cold TTFT (cache off), the ideal for a
    warm request (fixed cost kept, the cached tokens' compute removed), and the measured warm TTFT (cache on).

    The fixed cost and the cost per FLOP are fitted on every cold measurement of different lengths there is: the
    calibration's cold requests (`cold_samples`: (prompt tokens, TTFT), the short one included) and the cache-off
    points at the lowest concurrency."""
    import polars as pl

    from .aggregate import closed_loop

    closed = closed_loop(summary)
    c_min, top = closed["concurrency"].min(), closed["reuse_pct"].max()
    cold_points = closed.filter(
        (pl.col("concurrency") == c_min)
        & (pl.col("mode") == OFF)
        & (pl.col("requests_ok") > 0)
        & pl.col("mean_ttft_s").is_not_null()
    )
    fit = fit_fixed_cost(
        [(r["prompt_tokens"] / r["requests_ok"], r["mean_ttft_s"]) for r in cold_points.iter_rows(named=True)]
        + [(float(t), float(y)) for t, y in cold_samples if t and y],
        shape,
    )
    pick = closed.filter((pl.col("concurrency") == c_min) & (pl.col("reuse_pct") == top))
    rows = []
    for (regime,), grp in pick.group_by("regime", maintain_order=True):
        off = grp.filter(pl.col("mode") == OFF)
        on = grp.filter(pl.col("mode") == ON)
        if off.is_empty() or on.is_empty() or on["mean_ttft_warm_s"][0] is None or off["mean_ttft_s"][0] is None:
            continue
        cold, warm = off["mean_ttft_s"][0], on["mean_ttft_warm_s"][0]
        tokens = off["prompt_tokens"][0] / off["requests_ok"][0]
        cached = (min(off["prefix_len_tokens"][0], tokens - 1) // block_size) * block_size
        ideal = ideal_ttft(cold, shape, tokens, cached, fit[1] if fit else None)
        rows.append(
            {
                "regime": regime,
                "prefix_len_tokens": off["prefix_len_tokens"][0],
                "concurrency": c_min,
                "cold_s": cold,
                "ideal_s": ideal,
                "warm_s": warm,
                "tokens": tokens,
                "cached": cached,
                "fixed_s": fit[0] if fit else None,
                "s_per_flop": fit[1] if fit else None,
                "flops_left": prefill_flops(shape, tokens, cached) / prefill_flops(shape, tokens),
                "share": achieved_share(cold, warm, ideal, fit[0] if fit else None),
            }
        )
    return rows
