"""The ideal saving: prefill FLOPs a cached prefix removes, from the model's own configuration.

For a prompt of T tokens with C of them cached, a decoder of L layers, width d, KV width d_kv and MLP
width f does about 2·P·(T−C) FLOPs in its weight matmuls (P = non-embedding parameters) and
2·L·d·(T²−C²) in causal attention. If TTFT were all prefill compute, the cache would cut the cold
TTFT in proportion: that is the ideal the measured warm TTFT is compared with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    kv_hidden: int
    mlp: int
    gated_mlp: bool = True

    @property
    def params(self) -> int:
        """Non-embedding parameters in the matmuls (attention q/k/v/o + MLP)."""
        attn = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_hidden
        mlp = (3 if self.gated_mlp else 2) * self.hidden * self.mlp
        return self.layers * (attn + mlp)


def shape_from_config(config: dict) -> Shape:
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    kv_heads = config.get("num_key_value_heads") or heads
    return Shape(config["num_hidden_layers"], config["hidden_size"], kv_heads * head_dim, config["intermediate_size"],
                 config.get("hidden_act", "silu") in ("silu", "swiglu", "gelu_pytorch_tanh"))


def load_shape(model_dir: str | Path) -> Shape | None:
    path = Path(model_dir) / "config.json"
    return shape_from_config(json.loads(path.read_text())) if path.is_file() else None


def prefill_flops(shape: Shape, prompt_tokens: float, cached_tokens: float = 0.0) -> float:
    new = prompt_tokens - cached_tokens
    return 2 * shape.params * new + 2 * shape.layers * shape.hidden * (prompt_tokens ** 2 - cached_tokens ** 2)


def ideal_ttft(cold_ttft_s: float, shape: Shape, prompt_tokens: float, cached_tokens: float) -> float:
    """Cold TTFT scaled by the share of prefill FLOPs left once `cached_tokens` come from cache."""
    return cold_ttft_s * prefill_flops(shape, prompt_tokens, cached_tokens) / prefill_flops(shape, prompt_tokens)


def achieved_share(cold_s: float, warm_s: float, ideal_s: float) -> float | None:
    """How much of the ideal TTFT saving the engine delivered (1 = all of it)."""
    return (cold_s - warm_s) / (cold_s - ideal_s) if cold_s > ideal_s else None


def ideal_rows(summary, shape: Shape, block_size: int) -> list[dict]:
    """Per regime, at full reuse and the lowest concurrency (closed loop): cold TTFT (cache off), the FLOPs
    ideal for a warm request, and the measured warm TTFT (cache on)."""
    import polars as pl

    from .aggregate import closed_loop

    closed = closed_loop(summary)
    c_min, top = closed["concurrency"].min(), closed["reuse_pct"].max()
    pick = closed.filter((pl.col("concurrency") == c_min) & (pl.col("reuse_pct") == top))
    rows = []
    for (regime,), grp in pick.group_by("regime", maintain_order=True):
        off = grp.filter(pl.col("mode") == "no_prefix_cache")
        on = grp.filter(pl.col("mode") == "with_prefix_cache")
        if off.is_empty() or on.is_empty() or on["mean_ttft_warm_s"][0] is None:
            continue
        cold, warm = off["mean_ttft_s"][0], on["mean_ttft_warm_s"][0]
        tokens = off["prompt_tokens"][0] / off["requests_ok"][0]
        cached = (min(off["prefix_len_tokens"][0], tokens - 1) // block_size) * block_size
        ideal = ideal_ttft(cold, shape, tokens, cached)
        rows.append({"regime": regime, "prefix_len_tokens": off["prefix_len_tokens"][0], "concurrency": c_min,
                     "cold_s": cold, "ideal_s": ideal, "warm_s": warm, "tokens": tokens, "cached": cached,
                     "flops_left": prefill_flops(shape, tokens, cached) / prefill_flops(shape, tokens),
                     "share": achieved_share(cold, warm, ideal)})
    return rows
