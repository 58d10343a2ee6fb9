"""The FLOPs model of the ideal saving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefixbench.ideal import Shape, achieved_share, ideal_ttft, load_shape, prefill_flops, shape_from_config

ROOT = Path(__file__).resolve().parents[1]


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
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 1, "hidden_size": 8, "num_attention_heads": 2,
                                                      "intermediate_size": 16}))
    assert load_shape(tmp_path).kv_hidden == 8
