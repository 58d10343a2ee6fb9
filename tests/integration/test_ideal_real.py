"""The FLOPs model of the ideal saving, on the real converted SmolLM2 (tests/unit/test_ideal.py has the rest)."""

from __future__ import annotations

import pytest

from prefixbench.ideal import load_shape


@pytest.mark.integration
def test_smollm2_parameter_count(smollm2_dir):
    shape = load_shape(smollm2_dir)
    # 134.5 M parameters in all, 28.3 M of them the (tied) embedding: the rest is in the matmuls (+ norms).
    assert shape.params == pytest.approx(134.5e6 - 49152 * 576, rel=0.01)
