"""Facts about the machine a run happens on: CPU model and flags, the dtype the CPU can compute, GPUs.

The CPU target's dtype matters more than anything else on a small machine: without AVX-512-BF16 or
AMX-BF16, torch emulates bfloat16 and a SmolLM2 prefill runs ~40x slower than in float32 (measured on
an AVX2-only EPYC: 1.3 vs 53.7 GFLOP/s). So `dtype: auto` on the CPU is decided here from the flags.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # either one: bfloat16 matmuls run in hardware
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")  # the flags a reader needs to see


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]


def read_cpu_info(cpuinfo: str | None = None) -> CpuInfo:
    """Model name and flags from /proc/cpuinfo (or the given text); empty flags where it can't be read."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    model: str | None = None
    flags: frozenset[str] = frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return CpuInfo(model or platform.processor() or "unknown", flags)


# Flags an AVX2-only CPU (an AMD EPYC of this project's machines) lacks, and the environment that holds torch and
# oneDNN to AVX2 on a CPU that has them: with both, an AVX-512/AMX Xeon runs a float32 server close to an EPYC's pace.
NOT_AVX2_PREFIXES = ("avx512", "amx", "avx_vnni")
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def as_isa(cpu: CpuInfo, isa: str) -> CpuInfo:
    """The CPU as the run must treat it: `native` as it is; `avx2` without any AVX-512, AMX or AVX-VNNI flag."""
    if isa == "native":
        return cpu
    if isa != "avx2":
        raise ValueError(f"cpu_isa {isa!r}: expected native or avx2")
    kept = frozenset(f for f in cpu.flags if not f.startswith(NOT_AVX2_PREFIXES))
    return CpuInfo(cpu.model, kept)  # the same CPU; the dtype choice's reason says it is held to AVX2


def isa_env(isa: str) -> dict[str, str]:
    """The server environment that holds torch and oneDNN to `isa` (nothing for native)."""
    return dict(AVX2_ENV) if isa == "avx2" else {}


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype a CPU server runs in, and why: the report's setup table states it."""

    dtype: str
    requested: str
    cpu: str
    flags: tuple[str, ...]  # the deciding flags this CPU has (of SHOWN_FLAGS)
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def cpu_dtype(requested: str, cpu: CpuInfo) -> DtypeChoice:
    """Resolve a CPU target's dtype: `auto` is bfloat16 only where the CPU computes it natively, else float32."""
    native = [f for f in BF16_FLAGS if f in cpu.flags]
    shown = tuple(f for f in SHOWN_FLAGS if f in cpu.flags)
    if requested != "auto":
        note = ""
        if requested == "bfloat16" and not native:
            note = "; this CPU has no avx512_bf16/amx_bf16, so bfloat16 is emulated (expect a ~40x slower prefill)"
        return DtypeChoice(requested, requested, cpu.model, shown, f"set in the config{note}")
    if native:
        return DtypeChoice("bfloat16", "auto", cpu.model, shown, f"auto: {' and '.join(native)} present, bfloat16 runs natively")
    return DtypeChoice(
        "float32",
        "auto",
        cpu.model,
        shown,
        "auto: no avx512_bf16 or amx_bf16 flag, so bfloat16 would be emulated; float32 instead",
    )


def nvidia_smi(*args: str, timeout_s: float = 10) -> str | None:
    """What `nvidia-smi ARGS` prints, or None where there is no such tool or it fails (the one place it is called)."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=timeout_s)
    except (subprocess.SubprocessError, OSError):
        return None
    return out.stdout if out.returncode == 0 else None


def visible_gpus(env: dict[str, str] | None = None) -> list[int] | None:
    """The GPU indices CUDA_VISIBLE_DEVICES leaves this job (None: all of them, or ids that are not indices).

    Two pipelines on one host, one GPU each, must not count each other's memory."""
    value = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")
    if value is None or not value.strip():
        return None
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        return None


def nvidia_smi_gpus(*args: str, timeout_s: float = 10) -> str | None:
    """`nvidia-smi ARGS` restricted to the GPUs this job may use."""
    ids = visible_gpus()
    select = ("-i", ",".join(map(str, ids))) if ids else ()
    return nvidia_smi(*args, *select, timeout_s=timeout_s)


def has_nvidia_smi() -> bool:
    return shutil.which("nvidia-smi") is not None


def process_tree(pid: int | None) -> list:
    """A process and all its descendants (psutil.Process objects); empty if it is gone."""
    import psutil

    if pid is None:
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def hardware() -> dict:
    """What the report's setup table shows about this machine."""
    cpu = read_cpu_info()
    info = {
        "machine": platform.machine(),
        "cpu": cpu.model,
        "cpu_count": cpu_count(),
        "cpu_flags": [f for f in SHOWN_FLAGS if f in cpu.flags],
    }
    gpu = nvidia_smi_gpus("--query-gpu=name,memory.total", "--format=csv,noheader")
    if gpu is not None:
        info["gpu"] = gpu.strip()
        link = nvidia_smi_gpus("--query-gpu=pcie.link.gen.max,pcie.link.width.max", "--format=csv,noheader")
        words = [w.strip() for w in (link or "").splitlines()[0].split(",")] if link and link.strip() else []
        if len(words) == 2 and all(w.isdigit() for w in words):  # the max: the current generation drops at idle
            info["gpu_pcie"] = {"gen": int(words[0]), "width": int(words[1])}
    return info
