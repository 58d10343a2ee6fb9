"""Server lifecycle: the engine's exact command as a script, start in its own process group, wait, tear down.

The two cache settings differ only in the engine's prefix-caching flag, which is always passed explicitly
(engines/vllm.py: V1 turns caching on by default). Teardown kills the whole process group on success, failure,
Ctrl-C or SIGTERM, and the child gets PDEATHSIG so even a SIGKILLed parent leaves no server behind.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from .client import bearer
from .engines import Engine, engine_for
from .host import process_tree
from .settings import ServerSpec


class ServerError(RuntimeError):
    """The server could not start, or died; the message names the log and quotes its tail."""


def server_argv(spec: ServerSpec, mode: str, port: str) -> list[str]:
    """The server command line of the spec's engine for one cache setting."""
    return engine_for(spec.engine).server_argv(spec, mode, port)


def server_env(spec: ServerSpec) -> dict[str, str]:
    """Environment overrides of the spec's engine."""
    return engine_for(spec.engine).server_env(spec)


def render_script(spec: ServerSpec, mode: str) -> str:
    """A runnable bash script holding the exact server command; the port is its first argument."""
    engine = engine_for(spec.engine)
    env_lines = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(server_env(spec).items()))
    if spec.api_key_env:  # the engine reads its own variable (vLLM: VLLM_API_KEY); the script names ours, never the key
        env_lines += f'export {engine.api_key_var}="${{{spec.api_key_env}:?set {spec.api_key_env} to the API key}}"\n'
    words = [shlex.quote(a) if a != "__PORT__" else '"$PORT"' for a in server_argv(spec, mode, "__PORT__")]
    cmd = words[0] + " " + words[1] + " " + words[2]
    for w in words[3:]:
        cmd += (" \\\n  " if w.startswith("--") else " ") + w
    return (
        "#!/usr/bin/env bash\n"
        f"# prefixbench: {engine.label} server, {mode} (generated; only the prefix-caching flag differs between modes)\n"
        "set -euo pipefail\n"
        'PORT="${1:-8000}"\n'
        f"{env_lines}"
        f"exec {cmd}\n"
    )


def write_script(spec: ServerSpec, mode: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_script(spec, mode))
    path.chmod(0o755)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _terminate_on_sigterm() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so `finally` blocks (teardown) run."""

    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers (a helper thread that forks a server must outlive it: PDEATHSIG)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


PORT_ATTEMPTS = 3


def port_was_taken(log_path: Path, offset: int) -> bool:
    """Whether the server's log since `offset` says its port was already in use."""
    try:
        with log_path.open("rb") as fh:
            fh.seek(offset)
            return b"Address already in use" in fh.read()
    except OSError:
        return False


class ManagedServer:
    """Context manager: start the script in a new process group, wait until ready, always tear down.

    `env` adds to this process's environment for the server (a replica's cores or GPU). Starting is split into
    `begin()` and `poll_start()` so that several servers can start at once from ONE thread (replicas.ManagedReplicas):
    PDEATHSIG fires when the thread that forked the server exits, so a server must be forked by a thread that lives
    as long as it does."""

    error: type[ServerError] = ServerError  # what its failures raise (replicas.ManagedRouter: RouterError)

    def __init__(
        self,
        script: Path,
        host: str,
        log_path: Path,
        ready_timeout_s: float,
        port: int | None = None,
        connect_host: str | None = None,
        term_grace_s: float = 5.0,
        api_key: str | None = None,
        *,
        engine: Engine,
        env: Mapping[str, str] | None = None,
    ):
        self.engine = engine
        self.label = f"{engine.label} server"  # how its errors name it
        self.ready_path = engine.health_path  # answers 200 once it is ready
        self._api_key = api_key  # sent with the readiness probe of a server that requires one; never stored elsewhere
        self.script, self.host, self.log_path = Path(script), host, Path(log_path)
        self.ready_timeout_s, self.term_grace_s = ready_timeout_s, term_grace_s
        self.env = dict(env or {})
        self.port_fixed = port is not None  # a port the caller asked for is never swapped for another
        self.port = port or free_port(self._bind_host())
        self._client_host = connect_host or ("127.0.0.1" if host in ("0.0.0.0", "::", "localhost") else host)
        self.base_url = f"http://{self._client_host}:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None
        self._t0 = 0.0
        self._attempt = 0
        self._log_start = 0
        self._log: BinaryIO | None = None

    def __enter__(self) -> ManagedServer:
        _terminate_on_sigterm()
        try:
            self.begin()
            while not self.poll_start():
                time.sleep(1.0)
        except BaseException:
            self.stop()
            raise
        return self

    def begin(self) -> None:
        """Start the first attempt; `poll_start()` then says when the server is ready."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._t0 = time.monotonic()
        self._attempt = 0
        self._spawn()

    def _spawn(self) -> None:
        self._attempt += 1
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            ["bash", str(self.script), str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            env={**os.environ, **self.env} if self.env else None,
        )

    def poll_start(self) -> bool:
        """One readiness check: True once the server answers and is ours; False while starting. Raises ServerError
        (the server stopped) when it died, timed out or lost its port too often; a lost port restarts it on another."""
        try:
            if not self.probe_ready():
                return False
            if self.port_fixed or self.owns_port():
                self.startup_s = time.monotonic() - self._t0
                return True
            lost = f"another process answers on port {self.port}"
        except ServerError:
            if self.port_fixed or self._attempt == PORT_ATTEMPTS or not port_was_taken(self.log_path, self._log_start):
                self.stop()
                raise
            lost = f"port {self.port} was taken"
        # Another job on this node took the port between free_port() and the bind: try a fresh one.
        self.stop()
        if self._attempt == PORT_ATTEMPTS:
            raise self.error(f"{lost}, {PORT_ATTEMPTS} times in a row; log: {self.log_path}")
        self._new_ports()
        with self.log_path.open("a") as fh:
            fh.write(f"[prefixbench] {lost}; restarting on port {self.port}\n")
        self._spawn()
        return False

    def _new_ports(self) -> None:
        self.port = free_port(self._bind_host())
        self.base_url = f"http://{self._client_host}:{self.port}"

    def _bind_host(self) -> str:
        return self.host if self.host not in ("0.0.0.0", "::") else "127.0.0.1"

    def owns_port(self) -> bool:
        """Whether the server answering on our port is ours (a process of our group listens on it).

        Two jobs on one node can be handed the same free port; the one that loses the bind must not
        measure the other's server."""
        import psutil

        for p in process_tree(self.proc.pid if self.proc else None):
            try:
                if any(
                    c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == self.port
                    for c in p.net_connections(kind="inet")
                ):
                    return True
            except psutil.Error:
                continue
        return False

    def __exit__(self, *exc) -> None:
        self.stop()

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise self.error(
                f"{self.label} exited with code {self.proc.returncode}; log: {self.log_path}\n"
                f"--- last lines ---\n{log_tail(self.log_path)}"
            )

    def probe_ready(self) -> bool:
        """One probe of the engine's health path: True on 200; raises ServerError when the server died, refuses the
        probe for want of a key, or is past its ready timeout."""
        self.check_alive()
        req = urllib.request.Request(f"{self.base_url}{self.ready_path}", headers=bearer(self._api_key))
        try:
            remaining = self.ready_timeout_s - (time.monotonic() - self._t0)
            with urllib.request.urlopen(req, timeout=max(0.5, min(5.0, remaining))) as r:
                if r.status == 200:
                    return True
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403) and self.owns_port():
                raise self.error(
                    f"{self.label} on port {self.port} refused the readiness probe (HTTP {exc.code}): it requires "
                    "an API key and " + ("refused the one given" if self._api_key else "none was given")
                ) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() - self._t0 > self.ready_timeout_s:
            raise self.error(
                f"{self.label} not ready after {self.ready_timeout_s:.0f} s; log: {self.log_path}\n"
                f"--- last lines ---\n{log_tail(self.log_path)}"
            )
        return False

    def wait_ready(self, t0: float) -> None:
        """Probe once a second until ready (ServerError when it dies or times out), counting from `t0`."""
        self._t0 = t0
        while not self.probe_ready():
            time.sleep(1.0)

    def stop(self) -> None:
        """SIGTERM the whole process group, then SIGKILL whatever is left after the grace period.

        A server that never became ready gets no grace: mid-start (torch.compile) vLLM ignores SIGTERM
        for tens of seconds, and there is nothing to shut down cleanly."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        kill_group(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=self.term_grace_s if self.startup_s is not None else 0.5)
        except subprocess.TimeoutExpired:
            pass
        kill_group(pgid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 5
        while group_alive(pgid) and time.monotonic() < deadline:
            kill_group(pgid, signal.SIGKILL)
            time.sleep(0.1)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


def kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False
