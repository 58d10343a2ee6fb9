"""The CPU target's dtype follows the CPU's flags: bfloat16 only where the hardware computes it."""

from __future__ import annotations

from prefixbench.config import dtype_choice, server_spec
from prefixbench.host import CpuInfo, cpu_dtype, read_cpu_info

EPYC = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2 fma bmi2
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2 fma bmi2
"""
XEON = """model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: avx avx2 avx512f avx512_bf16 amx_bf16 amx_tile
"""


def test_cpuinfo_is_parsed():
    cpu = read_cpu_info(EPYC)
    assert cpu.model == "AMD EPYC 7B13"
    assert "avx2" in cpu.flags and "avx512f" not in cpu.flags


def test_auto_is_float32_without_native_bf16():
    choice = cpu_dtype("auto", read_cpu_info(EPYC))
    assert choice.dtype == "float32"
    assert choice.flags == ("avx2",)
    assert "emulated" in choice.reason


def test_auto_is_bfloat16_with_avx512_bf16_or_amx():
    assert cpu_dtype("auto", read_cpu_info(XEON)).dtype == "bfloat16"
    assert cpu_dtype("auto", CpuInfo("x", frozenset({"avx512_bf16"}))).dtype == "bfloat16"
    assert cpu_dtype("auto", CpuInfo("x", frozenset({"amx_bf16"}))).dtype == "bfloat16"
    assert cpu_dtype("auto", CpuInfo("x", frozenset({"avx512f", "avx2"}))).dtype == "float32"


def test_an_explicit_dtype_is_kept_and_warned_about():
    choice = cpu_dtype("bfloat16", read_cpu_info(EPYC))
    assert choice.dtype == "bfloat16" and "emulated" in choice.reason
    assert cpu_dtype("float32", read_cpu_info(XEON)).dtype == "float32"


def cpu_target(**kw) -> dict:
    """A validated CPU target as the config resolves it (`kw` on top)."""
    base = {
        "python": "p",
        "model": {"source": "path", "path": "m", "served_name": "s"},
        "max_model_len": 512,
        "dtype": "auto",
        "block_size": 128,
        "cpu_isa": "native",
        "engine": "vllm",
    }
    return base | kw


def test_the_server_command_gets_the_resolved_dtype():
    target = cpu_target()
    cfg = {"server": {"host": "127.0.0.1"}}
    on_epyc = dtype_choice("cpu", target, read_cpu_info(EPYC))
    assert server_spec(cfg, target, on_epyc).dtype == "float32"
    assert server_spec(cfg, target, dtype_choice("cpu", target, read_cpu_info(XEON))).dtype == "bfloat16"
    assert dtype_choice("gpu", target, read_cpu_info(EPYC)) is None  # a GPU target's dtype is the engine's business


def test_visible_gpus_reads_cuda_visible_devices():
    """Two pipelines on one host, one GPU each, must not sum each other's GPU memory."""
    from prefixbench.host import visible_gpus

    assert visible_gpus({}) is None
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) is None
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1"}) == [1]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,2"}) == [0, 2]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-5f2c"}) is None  # UUIDs: leave nvidia-smi unrestricted


def test_a_xeon_held_to_avx2_chooses_and_runs_as_an_epyc_would():
    """Issue 25: the AVX2 emulation the tests' AVX2 tier and config/cpu-avx2.yaml use."""
    from prefixbench.host import as_isa

    held = as_isa(read_cpu_info(XEON), "avx2")
    assert "avx2" in held.flags and not {f for f in held.flags if f.startswith(("avx512", "amx"))}
    assert as_isa(read_cpu_info(XEON), "native") == read_cpu_info(XEON)
    target = cpu_target(cpu_isa="avx2", env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    choice = dtype_choice("cpu", target, read_cpu_info(XEON))
    assert choice.dtype == "float32" and "held to AVX2" in choice.reason and "ATEN_CPU_CAPABILITY=avx2" in choice.reason
    spec = server_spec({"server": {"host": "127.0.0.1"}}, target, choice)
    assert spec.dtype == "float32"
    assert dict(spec.env) == {"VLLM_CPU_KVCACHE_SPACE": "1", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    native = dtype_choice("cpu", {**target, "cpu_isa": "native"}, read_cpu_info(XEON))
    assert native.dtype == "bfloat16" and "held" not in native.reason
