"""One running server in, a complete `targets.endpoint` section out: what `prefixbench endpoint URL` measures.

A server with prefix caching on is enough: the cache-on setting is its traffic as designed, the cache-off setting
the same deployment with a unique `cache_salt` on every request (`salt_every_request`), each a forced miss. So the
probe asks the server what a config would otherwise have to say by hand, and fails before any benchmark starts
where the answer would be worthless:

- `GET /v1/models`: the model id; vLLM's model card also gives `max_model_len` and `root` (the path it loaded,
  the tokenizer's default when that is a folder on this machine: there is no model hub here);
- `GET /metrics`: vLLM's `vllm:cache_config_info` gauge, whose labels are the engine's CacheConfig fields as
  strings (vllm/v1/metrics/loggers.py `log_metrics_info`, fed by `CacheConfig.metrics_info()`, i.e. every field of
  vllm/config/cache.py): `block_size` and `enable_prefix_caching` ("True"/"False"); caching off is an error,
  since forced misses on a server that never hits measure nothing;
- `GET /version`: the engine version, for the description quoted in the report;
- three tiny completions (max_tokens 1) of one block plus a token, as token ids: twice unsalted (the second must
  hit a block, or caching does not work here) and once with a fresh salt (it must hit nothing, or the server
  ignores the salt and "cache off" would be a lie).

Why the probe sends requests rather than reading a version: vLLM added `cache_salt` to /v1/chat/completions in
v0.9.0 (PR #17045, the fix of CVE-2025-46570), and to /v1/completions, the route prefixbench uses, only with
PR #20981 (July 2025, in the v0.10 releases). Before that /v1/completions accepted the field and silently ignored
it: vLLM's request models allow unknown fields (`extra="allow"`, logged as ignored), so no 400 tells an old
server from a new one, and other OpenAI-compatible servers may do the same. Only a salted request's cached tokens
tell. They come from the response's `usage.prompt_tokens_details.cached_tokens` (vLLM: `--enable-prompt-tokens-details`)
or else from the `/metrics` hit counter around the request; with neither the check cannot be made, and the
description says so (the run's own paired check, the salted requests' cached tokens, remains).

Synchronous (urllib): it runs once, before the benchmark.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import OFF, ON
from .client import bearer, fresh_salt
from .endpoint import redact_url
from .engines import Engine, engine_for

TIMEOUT_S = 15.0  # a GET of models, metrics or version
COMPLETION_TIMEOUT_S = 300.0  # a one-token completion of one block (a CPU server takes seconds)
PROBE_TOKEN_BASE = 1000  # probe prompts use token ids from here: inside any LLM vocabulary, above special tokens
PROBE_TOKEN_SPAN = 4000
# vLLM's cache_config_info labels (CacheConfig field names)
BLOCK_SIZE_LABEL = "block_size"
PREFIX_CACHING_LABEL = "enable_prefix_caching"


class ProbeError(RuntimeError):
    """The server cannot be measured as one deployment with forced misses; the message says why and what to do."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8", errors="replace"))


def http(url: str, api_key: str | None, *, payload: dict | None = None, timeout: float = TIMEOUT_S) -> Answer:
    """One request; an HTTP error status is an answer, not an exception (the caller decides what it means)."""
    data = json.dumps(payload).encode() if payload is not None else None
    headers = {**bearer(api_key), **({"Content-Type": "application/json"} if data else {})}
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Answer(r.status, r.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.read())


def optional(url: str, api_key: str | None) -> Answer | None:
    """A GET whose absence is fine (metrics, version): None when it fails in any way."""
    try:
        answer = http(url, api_key)
    except (OSError, ValueError):
        return None
    return answer if answer.status == 200 else None


def base_url_of(url: str) -> str:
    """The server's root as the pipeline uses it (no trailing slash, no /v1); credentials and queries refused, since
    the URL is written into the config and the report."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProbeError(f"{url!r} is not an http(s) URL of a server, e.g. http://10.0.0.5:8000")
    if parts.username or parts.password or parts.query:
        raise ProbeError(
            f"{redact_url(url)}: give the URL without credentials or query; put an API key in an environment "
            "variable and name it with --api-key-env"
        )
    return url.rstrip("/").removesuffix("/v1")


def served_models(base: str, api_key: str | None, api_key_env: str | None) -> list[dict]:
    """`/v1/models`' entries; unreachable, refused or not OpenAI-shaped is an error."""
    where = f"{redact_url(base)}/v1/models"
    try:
        answer = http(f"{base}/v1/models", api_key)
    except (OSError, ValueError) as exc:
        raise ProbeError(f"server unreachable: {where} ({type(exc).__name__}: {exc}); is it running?") from None
    if answer.status in (401, 403):
        hint = (
            f"the key in ${api_key_env} was refused"
            if api_key_env
            else "it wants an API key: put it in an environment variable and name it with --api-key-env"
        )
        raise ProbeError(f"{where} answered HTTP {answer.status}: {hint}")
    if answer.status != 200:
        raise ProbeError(f"{where} answered HTTP {answer.status}: not an OpenAI-compatible server we can use")
    try:
        data = answer.json().get("data")
    except (ValueError, AttributeError):
        data = None
    if not isinstance(data, list) or not data:
        raise ProbeError(f"{where} lists no model: not an OpenAI-compatible server we can use")
    return [d for d in data if isinstance(d, dict) and d.get("id")]


def pick_model(models: list[dict], model: str | None, where: str) -> dict:
    ids = [m["id"] for m in models]
    if model is not None:
        if model not in ids:
            raise ProbeError(f"{where} does not serve model {model!r}; it serves {ids}")
        return models[ids.index(model)]
    if len(ids) > 1:
        raise ProbeError(f"{where} serves several models {ids}: pick one with --model")
    return models[0]


def cache_config(metrics_text: str | None, engine: Engine) -> dict[str, str]:
    """The labels of the engine's cache-config gauge (vLLM: vllm:cache_config_info), {} without one."""
    if not metrics_text:
        return {}
    from prometheus_client.parser import text_string_to_metric_families

    try:
        for family in text_string_to_metric_families(metrics_text):
            for sample in family.samples:
                if sample.name.startswith(engine.metrics.cache_config):
                    return dict(sample.labels)
    except ValueError:
        return {}
    return {}


def resolve_tokenizer(tokenizer: str | None, card: dict, model_id: str) -> str:
    """--tokenizer, else the folder the server loaded the model from (`root`) when it is a folder here."""
    if tokenizer:
        return tokenizer
    root = card.get("root")
    if isinstance(root, str) and root and Path(root).is_dir():
        return root
    said = f"its model root {root!r} is not a folder on this machine" if root else "it names no model root"
    raise ProbeError(
        f"no tokenizer found for {model_id!r}: {said}, and prompts must be exact in the served model's tokens; "
        "give --tokenizer (a local folder holding the model's tokenizer files; there is no model hub here)"
    )


def resolve_int(name: str, given: int | None, served: int | None, flag: str, *, at_most: bool) -> int:
    """A size given and/or reported by the server: both must agree (`at_most`: the given one may be smaller)."""
    if given is not None and served is not None:
        if given > served if at_most else given != served:
            rel = "above" if at_most else "unlike"
            raise ProbeError(f"{flag} {given} is {rel} the server's {name} ({served}); leave it out or give {served}")
        return given
    if given is not None:
        return given
    if served is not None:
        return served
    raise ProbeError(f"the server does not report its {name} (vLLM's /metrics or /v1/models): give {flag}")


@dataclass(frozen=True)
class SaltCheck:
    """What the three probe requests showed: cached tokens of the repeat and of the salted repeat (None: unknown)."""

    repeat_cached: int | None
    salted_cached: int | None
    source: str  # "per-request usage", "the /metrics hit counter", or why neither

    @property
    def checked(self) -> bool:
        return self.repeat_cached is not None and self.salted_cached is not None


def probe_prompt(block_size: int) -> list[int]:
    """One full block and one token more (a cached block needs a token after it), as token ids new to the cache."""
    start = secrets.randbelow(PROBE_TOKEN_SPAN)
    return [PROBE_TOKEN_BASE + (start + 7 * i) % PROBE_TOKEN_SPAN for i in range(block_size + 1)]


def check_salt(base: str, model: str, api_key: str | None, engine: Engine, block_size: int) -> SaltCheck:
    """Send the probe prompt twice and then with a fresh salt; each one's cached tokens from its usage, or else
    from the hit counter's delta around it (other traffic on the server would count too)."""
    prompt = probe_prompt(block_size)

    def hits_counter() -> float | None:
        page = optional(f"{base}/metrics", api_key)
        return engine.parse_metrics(page.body.decode()).get(engine.metrics.prefix_hits) if page else None

    def send(salt: str | None) -> tuple[int | None, int | None]:
        """(from usage, from the counter)"""
        payload = {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0}
        if salt:
            payload[engine.cache_salt_field] = salt
        before = hits_counter()
        try:
            answer = http(f"{base}/v1/completions", api_key, payload=payload, timeout=COMPLETION_TIMEOUT_S)
        except (OSError, ValueError) as exc:
            raise ProbeError(f"a probe completion to {redact_url(base)} failed ({type(exc).__name__}: {exc})") from None
        if answer.status != 200:
            body = answer.body.decode("utf-8", errors="replace")[:300]
            what = "a salted" if salt else "a"
            hint = (
                f"; it refuses `{engine.cache_salt_field}`, so it cannot force misses: measure two deployments "
                "(config/endpoints.yaml) instead"
                if salt
                else ""
            )
            raise ProbeError(f"{what} probe completion to {redact_url(base)} answered HTTP {answer.status}: {body}{hint}")
        after = hits_counter()
        usage = answer.json().get("usage") or {}
        counted = int(after - before) if before is not None and after is not None else None
        return engine.cached_tokens(usage), counted

    send(None)
    repeat = send(None)
    salted = send(fresh_salt())
    if repeat[0] is not None and salted[0] is not None:
        return SaltCheck(repeat[0], salted[0], "per-request usage")
    if repeat[1] is not None and salted[1] is not None:
        return SaltCheck(repeat[1], salted[1], "the /metrics hit counter")
    return SaltCheck(None, None, "no per-request cached tokens and no hit counter")


def judge_salt(check: SaltCheck, block_size: int, where: str) -> None:
    """A repeat that hit nothing: caching does not work here; a salted repeat that hit: the salt is ignored."""
    if not check.checked:
        return
    if not check.repeat_cached:
        raise ProbeError(
            f"{where}: a repeated {block_size + 1}-token prompt hit 0 cached tokens ({check.source}): prefix caching "
            "does not work on this server, so forced misses would measure nothing. Start it with prefix caching on "
            "(vLLM: --enable-prefix-caching)"
        )
    if check.salted_cached:
        raise ProbeError(
            f"{where}: a request with a fresh cache_salt still hit {check.salted_cached} cached tokens ({check.source}): "
            "the server ignores cache_salt on /v1/completions (vLLM added it there in v0.10, PR #20981), so it cannot "
            "force misses. Upgrade it, or measure two deployments, one with caching off (config/endpoints.yaml)"
        )


def endpoint_config(
    url: str,
    *,
    model: str | None = None,
    tokenizer: str | None = None,
    api_key_env: str | None = None,
    max_model_len: int | None = None,
    block_size: int | None = None,
) -> dict:
    """The `targets.endpoint` section for one running server with prefix caching on: both cache settings are that
    deployment, the cache-off one as forced misses (`salt_every_request`). Raises ProbeError, with what to do, where
    the server cannot be measured that way."""
    engine = engine_for("vllm")
    base = base_url_of(url)
    where = redact_url(base)
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ProbeError(f"--api-key-env {api_key_env}: that environment variable is not set")
    card = pick_model(served_models(base, api_key, api_key_env), model, where)
    model_id = card["id"]
    metrics = optional(f"{base}/metrics", api_key)
    labels = cache_config(metrics.body.decode("utf-8", errors="replace") if metrics else None, engine)
    if labels.get(PREFIX_CACHING_LABEL, "").lower() == "false":
        raise ProbeError(
            f"{where} reports prefix caching off ({engine.metrics.cache_config} {PREFIX_CACHING_LABEL}=False): forced "
            "misses on it would measure nothing. Start it with prefix caching on (vLLM: --enable-prefix-caching), or "
            "measure two deployments, one with caching off (config/endpoints.yaml)"
        )
    served_block = labels.get(BLOCK_SIZE_LABEL, "")
    served_len = card.get("max_model_len")
    context = resolve_int(
        "context length (max_model_len)",
        max_model_len,
        served_len if isinstance(served_len, int) else None,
        "--max-model-len",
        at_most=True,
    )
    block = resolve_int(
        "KV-cache block size", block_size, int(served_block) if served_block.isdigit() else None, "--block-size", at_most=False
    )
    tok = resolve_tokenizer(tokenizer, card, model_id)
    check = check_salt(base, model_id, api_key, engine, block)
    judge_salt(check, block, where)
    version_page = optional(f"{base}{engine.version_path}", api_key)
    try:
        version = str(version_page.json().get("version") or "") if version_page else ""
    except (ValueError, AttributeError):
        version = ""
    salt_words = (
        f"checked: a repeated {block + 1}-token prompt hit {check.repeat_cached} cached tokens, the same prompt with a "
        f"fresh salt {check.salted_cached} ({check.source})"
        if check.checked
        else f"not checked before the run ({check.source})"
    )
    description = (
        f"{model_id} on {engine.label}{' ' + version if version else ''} at {where}: one deployment with prefix caching "
        f"on; cache off = forced misses on it, every request a unique cache_salt ({salt_words})"
    )
    entry: dict[str, Any] = {"base_url": base, "model": model_id}
    if api_key_env:
        entry["api_key_env"] = api_key_env
    return {
        "description": description,
        "endpoints": {OFF: {**entry, "salt_every_request": True}, ON: dict(entry)},
        "tokenizer": tok,
        "max_model_len": context,
        "block_size": block,
    }
