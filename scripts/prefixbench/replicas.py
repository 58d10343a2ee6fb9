"""Several vLLM servers behind vLLM's router: their environments, their start and teardown together, the router's
command line and process, and which replica served each request.

A replicated lifetime starts N servers from one script (each its own port, process group, log, and the CPU cores or
GPU its environment gives it) and, per pass, `vllm-router` with one policy in front of them. Either all start or
none is left running: a server that fails takes the others down, and its error names its log. The router cannot say
which replica served a request, so each replica logs the id of every request it receives (`--enable-log-requests`)
and `attribute` reads those lines back: an id found in exactly one replica's log since the pass began is that
replica's, anything else is reported, never guessed. docs/replicas.md says how it runs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .engines import Engine, engine_for
from .server import ManagedServer, ServerError, _die_with_parent, _terminate_on_sigterm, free_port, kill_group, log_tail
from .settings import RouterSpec

__all__ = [
    "Attribution",
    "ManagedReplicas",
    "ManagedRouter",
    "RouterError",
    "RouterSpec",
    "attribute",
    "attribution",
    "cpu_ranges",
    "log_offsets",
    "recorded_argv",
    "replica_envs",
    "router_argv",
    "router_version",
    "start_waves",
]

# The router's own readiness answer: its model list, which it serves once it reaches a worker.
ROUTER_READY_PATH = "/v1/models"
# Flags only the cache_aware policy reads (its prefix tree's match threshold and when load balance overrides it).
CACHE_AWARE = "cache_aware"


class RouterError(ServerError):
    """vLLM's router would not start, refused its arguments, or died; the message quotes its log."""


# ---------------------------------------------------------------------------------------------------------------------
# Environments: how N replicas share one machine


def cpu_ranges(cores: Sequence[int], n: int) -> list[list[int]]:
    """`cores` split into n contiguous runs as even as they go (the first ones one longer when it does not divide)."""
    if n < 1 or len(cores) < n:
        raise ValueError(f"{n} replicas need at least {n} CPU cores; {len(cores)} available")
    ordered = sorted(cores)
    size, extra = divmod(len(ordered), n)
    out, at = [], 0
    for i in range(n):
        take = size + (1 if i < extra else 0)
        out.append(ordered[at : at + take])
        at += take
    return out


def id_list(ids: Sequence[int]) -> str:
    """CPU ids as vLLM's VLLM_CPU_OMP_THREADS_BIND reads them: "0-3", "0,2", "4"."""
    parts, run = [], [ids[0]]
    for c in ids[1:]:
        if c == run[-1] + 1:
            run.append(c)
        else:
            parts.append(run)
            run = [c]
    parts.append(run)
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in parts)


def visible_gpus(gpus: int) -> list[str]:
    """The GPU ids this process may hand out: CUDA_VISIBLE_DEVICES where set (SLURM sets it), else 0..gpus-1."""
    given = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return given[:gpus] if given else [str(i) for i in range(gpus)]


def replica_envs(
    target_kind: str,
    n: int,
    gpus: int | None = None,
    cores: Sequence[int] | None = None,
    *,
    devices: Sequence[str] | None = None,
    engine: Engine | None = None,
) -> list[dict[str, str]]:
    """Each replica's environment overrides.

    CPU: the cores split into n contiguous ranges, each replica's threads bound to its own (vLLM:
    VLLM_CPU_OMP_THREADS_BIND, the engine's cpu_bind_var); `cores` defaults to the CPUs this process may run on. GPU: CUDA_VISIBLE_DEVICES, one
    GPU each while there are as many as replicas, else replica i on GPU i mod gpus (they share it by memory fraction:
    config.gpu_memory_fraction); `devices` defaults to visible_gpus(gpus)."""
    if target_kind == "cpu":
        ranges = cpu_ranges(list(cores) if cores is not None else sorted(os.sched_getaffinity(0)), n)
        return [{(engine or engine_for("vllm")).cpu_bind_var: id_list(r)} for r in ranges]
    if target_kind == "gpu":
        ids = list(devices) if devices is not None else visible_gpus(gpus or n)
        if not ids:
            raise ValueError("a GPU target's replicas need at least one GPU")
        return [{"CUDA_VISIBLE_DEVICES": ids[i % len(ids)]} for i in range(n)]
    raise ValueError(f"replicas run on a cpu or gpu target, not {target_kind!r}")


def start_waves(envs: Sequence[Mapping[str, str]]) -> list[list[int]]:
    """The order replicas start in: at once, except that replicas sharing a GPU start one after another. vLLM sizes
    its KV pool from the GPU memory it sees while it profiles, which a neighbour starting at that moment changes."""
    seen: dict[str, int] = {}
    waves: list[list[int]] = []
    for i, env in enumerate(envs):
        device = env.get("CUDA_VISIBLE_DEVICES")
        k = seen.get(device, 0) if device is not None else 0
        if device is not None:
            seen[device] = k + 1
        while len(waves) <= k:
            waves.append([])
        waves[k].append(i)
    return waves


# ---------------------------------------------------------------------------------------------------------------------
# Starting and stopping N servers together


class ManagedReplicas:
    """Context manager: N servers of one script, each with its own log and environment, all ready or all torn down.

    They start concurrently, polled from this one thread: a server must be forked by a thread that lives as long as it
    does, since PDEATHSIG fires when the forking thread exits (server.ManagedServer). If any fails to start, every
    other is stopped and the failing one's ServerError (naming its log) is raised; Ctrl-C and SIGTERM tear all down."""

    def __init__(
        self,
        script: Path,
        host: str,
        log_paths: Sequence[Path],
        ready_timeout_s: float,
        envs: Sequence[Mapping[str, str]],
        api_key: str | None = None,
        *,
        engine: Engine,
        term_grace_s: float = 5.0,
        poll_s: float = 1.0,
    ):
        if len(log_paths) != len(envs):
            raise ValueError(f"{len(log_paths)} log paths for {len(envs)} replica environments")
        self.envs = [dict(e) for e in envs]
        self.poll_s = poll_s
        self.servers: list[ManagedServer] = [
            ManagedServer(
                script, host, Path(log), ready_timeout_s, term_grace_s=term_grace_s, api_key=api_key, engine=engine, env=env
            )
            for log, env in zip(log_paths, self.envs)
        ]
        self.startup_s: float | None = None

    def __enter__(self) -> ManagedReplicas:
        _terminate_on_sigterm()
        t0 = time.monotonic()
        try:
            for wave in start_waves(self.envs):
                for i in wave:
                    self.servers[i].begin()
                pending = list(wave)
                while pending:
                    for i in list(pending):
                        try:
                            ready = self.servers[i].poll_start()
                        except ServerError as exc:
                            raise type(exc)(f"replica {i} of {len(self.servers)}: {exc}") from exc
                        if ready:
                            pending.remove(i)
                    if pending:
                        time.sleep(self.poll_s)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM every replica's group at once (their grace periods overlap), then each one's full teardown."""
        for s in self.servers:
            if s.proc is not None:
                kill_group(s.proc.pid, signal.SIGTERM)
        for s in self.servers:
            s.stop()

    def check_alive(self) -> None:
        for s in self.servers:
            s.check_alive()

    @property
    def worker_urls(self) -> list[str]:
        return [s.base_url for s in self.servers]


# ---------------------------------------------------------------------------------------------------------------------
# The router


def router_argv(
    spec: RouterSpec, policy: str, worker_urls: Sequence[str], host: str, port: int, prometheus_port: int
) -> list[str]:
    """vllm-router's command line for one policy. Its Prometheus page stays on loopback; cache_aware gets its
    thresholds (the other policies do not read them); `extra_args` come last."""
    argv = [spec.binary, "--worker-urls", *worker_urls, "--policy", policy, "--host", host, "--port", str(port)]
    argv += ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(prometheus_port)]
    if policy == CACHE_AWARE:
        argv += [
            "--cache-threshold",
            f"{spec.cache_threshold:g}",
            "--balance-abs-threshold",
            str(spec.balance_abs_threshold),
            "--balance-rel-threshold",
            f"{spec.balance_rel_threshold:g}",
        ]
    return argv + list(spec.extra_args)


def recorded_argv(argv: Sequence[str]) -> list[str]:
    """A router command line as server.json keeps it: ports and worker URLs (which carry ports) as placeholders, and
    no API key."""
    out: list[str] = []
    hide = {"--port": "<port>", "--prometheus-port": "<port>", "--api-key": "<key>"}
    in_workers = False
    for i, a in enumerate(argv):
        prev = argv[i - 1] if i else ""
        if a.startswith("--"):
            in_workers = a == "--worker-urls"
            out.append(a)
        elif prev in hide:
            out.append(hide[prev])
        elif in_workers:
            out.append(f"<replica {sum(1 for x in out if x.startswith('<replica'))}>")
        else:
            out.append(a)
    return out


def router_python(binary: str) -> str | None:
    """The interpreter of a `vllm-router` console script (its shebang), or None for a native executable."""
    try:
        with open(binary, "rb") as fh:
            first = fh.readline(400)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    if not words:
        return None
    return words[1] if Path(words[0]).name == "env" and len(words) > 1 else words[0]


def router_version(binary: str | RouterSpec) -> str:
    """The installed vllm-router's version (from its package metadata, through its own interpreter); "unknown" when it
    cannot tell."""
    path = binary.binary if isinstance(binary, RouterSpec) else binary
    python = router_python(path)
    if python is None:
        return "unknown"
    try:
        return subprocess.run(
            [python, "-c", "from importlib.metadata import version; print(version('vllm-router'))"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
    except (subprocess.SubprocessError, OSError):
        return "unknown"


INVALID_CHOICE = re.compile(r"argument --policy: invalid choice: [^\n]*")


class ManagedRouter(ManagedServer):
    """Context manager: vllm-router with one policy in front of running replicas, in its own process group (with
    PDEATHSIG, like a server), on a free loopback port with its Prometheus page on another; ready when GET /v1/models
    answers 200 within the spec's ready_timeout_s. A router that will not start, refuses the policy, or dies raises
    RouterError quoting its log."""

    error = RouterError

    def __init__(
        self,
        spec: RouterSpec,
        policy: str,
        worker_urls: Sequence[str],
        host: str,
        log_path: Path,
        *,
        api_key: str | None = None,
        term_grace_s: float = 5.0,
    ):
        super().__init__(
            Path(spec.binary), host, log_path, spec.ready_timeout_s, term_grace_s=term_grace_s, api_key=api_key,
            engine=engine_for("vllm"),
        )  # fmt: skip
        self.label = "vLLM router"
        self.ready_path = ROUTER_READY_PATH
        self.spec, self.policy, self.worker_urls = spec, policy, list(worker_urls)
        self.prometheus_port = free_port("127.0.0.1")
        self._api_key_arg = api_key
        self.worker_order: list[int] = []  # replica indexes in the router's own order (read_worker_order)

    def poll_start(self) -> bool:
        """Ready once /v1/models answers 200 AND the router's `GET /workers` lists every replica; then its worker
        order is known. The router keeps workers in a hash map: round_robin, tie-breaks and /v1/models follow that
        order, which changes from one start to the next whatever --worker-urls says (docs/replicas.md)."""
        if not super().poll_start():
            return False
        order = self.read_worker_order()
        if len(order) == len(self.worker_urls):
            self.worker_order = order
            return True
        self.startup_s = None
        if time.monotonic() - self._t0 > self.ready_timeout_s:
            raise RouterError(
                f"vllm-router answers but lists {len(order)} of {len(self.worker_urls)} replicas after "
                f"{self.ready_timeout_s:.0f} s; log: {self.log_path}\n--- last lines ---\n{log_tail(self.log_path)}"
            )
        return False

    def __enter__(self) -> ManagedRouter:
        _terminate_on_sigterm()
        try:
            self.begin()
            while not self.poll_start():
                time.sleep(0.2)  # a router starts in about a second: poll it more often than a server
        except BaseException:
            self.stop()
            raise
        return self

    def read_worker_order(self) -> list[int]:
        """The replicas' indexes (in --worker-urls) in the order `GET /workers` lists them; [] when it does not answer."""
        import json
        import urllib.error
        import urllib.request

        index = {u.rstrip("/"): i for i, u in enumerate(self.worker_urls)}
        try:
            with urllib.request.urlopen(f"{self.base_url}/workers", timeout=5) as r:
                listed = json.loads(r.read()).get("workers") or []
        except (urllib.error.URLError, OSError, ValueError, AttributeError):
            return []
        urls = [w.get("url", "").rstrip("/") for w in listed if isinstance(w, dict)]
        return [index[u] for u in urls if u in index]

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}/metrics"

    @property
    def argv(self) -> list[str]:
        """The command line it runs (the API key, if any, only here: never recorded; see recorded_argv)."""
        argv = router_argv(self.spec, self.policy, self.worker_urls, self.host, self.port, self.prometheus_port)
        return argv + (["--api-key", self._api_key_arg] if self._api_key_arg else [])

    def _spawn(self) -> None:
        if not Path(self.spec.binary).exists() and "/" in self.spec.binary:
            raise RouterError(
                f"vllm-router not found at {self.spec.binary}: install the vllm-router package into the server "
                "environment (envs/server-*.in) or set the target's router.binary"
            )
        self._attempt += 1
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self._log = self.log_path.open("ab")
        log.write(f"[prefixbench] policy {self.policy}: {' '.join(recorded_argv(self.argv))}\n".encode())
        log.flush()
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise RouterError(f"vllm-router could not be run ({self.spec.binary}): {exc}") from None

    def _new_ports(self) -> None:
        super()._new_ports()
        self.prometheus_port = free_port("127.0.0.1")

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            since = self._log_text_since_start()
            refused = INVALID_CHOICE.search(since)
            if refused:
                raise RouterError(
                    f"vllm-router refused policy {self.policy!r}: {refused.group(0)}; log: {self.log_path}\n"
                    "(the schema's router.policies lists the policies prefixbench measures)"
                )
            raise RouterError(
                f"vllm-router (policy {self.policy}) exited with code {self.proc.returncode}; log: {self.log_path}\n"
                f"--- last lines ---\n{log_tail(self.log_path)}"
            )

    def _log_text_since_start(self) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_start)
                return fh.read().decode(errors="replace")
        except OSError:
            return ""


# ---------------------------------------------------------------------------------------------------------------------
# Which replica served each request


def log_offsets(paths: Sequence[Path]) -> list[int]:
    """Each log's size now (0 for one not written yet): where a pass's request lines begin."""
    return [Path(p).stat().st_size if Path(p).exists() else 0 for p in paths]


@dataclass
class Attribution:
    """Where each request id was found: `replica` for ids logged by exactly one replica, `unknown` (id -> why) for the
    others, never a guess."""

    replica: dict[str, int] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)
    # Per replica: request id -> its place among the requests that replica logged since the offset (0 first). The order
    # requests reach a replica is not the order they were sent (cache_aware asks every replica to tokenize a request
    # before routing it, so two sent a millisecond apart can arrive the other way round), and which of two requests
    # sharing a prefix computes it and which hits follows this order.
    arrival: list[dict[str, int]] = field(default_factory=list)


def attribution(
    request_ids: Sequence[str],
    logs: Sequence[tuple[Path, int]],
    engine: Engine | None = None,
    *,
    dead: Collection[int] = (),
) -> Attribution:
    """Each request id's replica from the replicas' request logs, each read from its byte offset (log_offsets before
    the pass), where the engine's request line names the id the client sent (engines: logged_request_id). An id in no
    log is reported in `unknown`; so is one in several,
    except where all but one of them are `dead` replicas: the router retries a request whose replica died before
    answering on another one, which then served it (a replica that died after answering was sent no retry)."""
    eng = engine or engine_for("vllm")
    wanted = set(request_ids)
    seen: dict[str, set[int]] = {}
    out = Attribution()
    for index, (path, offset) in enumerate(logs):
        order: dict[str, int] = {}
        with Path(path).open("rb") as fh:
            fh.seek(offset)
            for line in fh:
                logged = eng.logged_request_id(line)
                if logged is None:
                    continue
                order.setdefault(logged, len(order))
                if logged in wanted:
                    seen.setdefault(logged, set()).add(index)
        out.arrival.append(order)
    for rid in request_ids:
        where = seen.get(rid, set())
        alive = where - set(dead)
        if len(where) == 1:
            out.replica[rid] = next(iter(where))
        elif len(alive) == 1:
            out.replica[rid] = next(iter(alive))
        elif where:
            out.unknown[rid] = f"logged by several replicas ({', '.join(str(i) for i in sorted(where))}): the router retried it"
        else:
            out.unknown[rid] = "no replica logged it"
    return out


def attribute(
    request_ids: Sequence[str], logs: Sequence[tuple[Path, int]], engine: Engine | None = None, *, dead: Collection[int] = ()
) -> dict[str, int]:
    """Request id -> index of the one replica that logged it since its offset; ids found in no log or in several are
    left out (attribution() says why)."""
    return attribution(request_ids, logs, engine, dead=dead).replica
