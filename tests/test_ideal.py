"""The FLOPs model of the ideal saving."""

from __future__ import annotations

import json

import pytest

from prefixbench.ideal import Shape, achieved_share, fit_fixed_cost, ideal_ttft, load_shape, prefill_flops, shape_from_config


@pytest.mark.integration
def test_smollm2_parameter_count(smollm2_dir):
    shape = load_shape(smollm2_dir)
    # 134.5 M parameters in all, 28.3 M of them the (tied) embedding: the rest is in the matmuls (+ norms).
    assert shape.params == pytest.approx(134.5e6 - 49152 * 576, rel=0.01)


def test_phi3_mini_shape():
    from prefixbench.dummy_model import SHAPES

    shape = shape_from_config(SHAPES["phi3-mini"])
    assert shape.params == pytest.approx(3.62e9, rel=0.02)  # 3.8 B with embeddings and head


def test_flops_arithmetic():
    s = Shape(layers=2, hidden=4, kv_hidden=4, mlp=8)
    assert s.params == 2 * (2 * 16 + 2 * 16 + 3 * 32)
    assert prefill_flops(s, 10) == 2 * s.params * 10 + 2 * 2 * 4 * 100
    assert prefill_flops(s, 10, 10) == 0
    assert ideal_ttft(1.0, s, 10, 0) == 1.0
    assert 0 < ideal_ttft(1.0, s, 10, 8) < 0.25
    assert achieved_share(1.0, 0.5, 0.0) == 0.5 and achieved_share(1.0, 0.9, 1.0) is None


def test_missing_config(tmp_path):
    assert load_shape(tmp_path) is None
    (tmp_path / "config.json").write_text(
        json.dumps({"num_hidden_layers": 1, "hidden_size": 8, "num_attention_heads": 2, "intermediate_size": 16})
    )
    assert load_shape(tmp_path).kv_hidden == 8


def test_attention_width_is_heads_times_head_dim():
    cfg = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "head_dim": 32, "intermediate_size": 128}
    shape = shape_from_config(cfg)
    assert shape.attn == 128 and shape.hidden == 64
    assert prefill_flops(shape, 10) == 2 * shape.params * 10 + 2 * 2 * 128 * 100


def test_the_ideal_keeps_the_fixed_cost():
    s = Shape(layers=2, hidden=64, kv_hidden=64, mlp=128)
    fixed, k = 0.02, 1e-9
    samples = [(t, fixed + k * prefill_flops(s, t)) for t in (300, 600, 1200)]
    fit_fixed, fit_k = fit_fixed_cost(samples, s)
    assert fit_fixed == pytest.approx(fixed) and fit_k == pytest.approx(k)
    cold = fixed + k * prefill_flops(s, 1200)
    ideal = ideal_ttft(cold, s, 1200, 1152, fit_k)
    assert ideal == pytest.approx(fixed + k * prefill_flops(s, 1200, 1152))
    assert ideal > fixed  # never below the fixed cost, unlike the FLOPs-share bound
    assert fit_fixed_cost([(500, 0.1), (510, 0.1)], s) is None  # one length: not separable
