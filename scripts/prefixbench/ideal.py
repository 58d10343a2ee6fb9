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
