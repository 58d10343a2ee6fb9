"""Server lifecycle with real processes: clear errors, readiness timeout, no process left behind."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import FAKE_VLLM
from helpers import pid_alive as _alive

from prefixbench.engines import engine_for
from prefixbench.server import ManagedServer, ServerError, ServerSpec, group_alive, render_script, server_argv

VLLM = engine_for("vllm")
SPEC = ServerSpec(
    python="/opt/py",
    model="m",
    served_model_name="s",
    host="127.0.0.1",
    max_model_len=4096,
    dtype="auto",
    engine="vllm",
    env={"A": "1"},
)


def test_modes_differ_only_in_cache_flag():
    off, on = server_argv(SPEC, "no_prefix_cache", "1"), server_argv(SPEC, "with_prefix_cache", "1")
    diff = [(a, b) for a, b in zip(off, on) if a != b]
    assert diff == [("--no-enable-prefix-caching", "--enable-prefix-caching")]
    assert "--enable-prompt-tokens-details" in on and on[on.index("--host") + 1] == "127.0.0.1"


def test_dev_mode_only_on_loopback():
    assert "VLLM_SERVER_DEV_MODE=1" in render_script(SPEC, "with_prefix_cache")
    public = dataclasses.replace(SPEC, host="0.0.0.0", env={"VLLM_SERVER_DEV_MODE": "1"})
    assert "VLLM_SERVER_DEV_MODE" not in render_script(public, "with_prefix_cache")


def test_script_is_runnable_bash(tmp_path):
    path = tmp_path / "s.sh"
    path.write_text(render_script(dataclasses.replace(SPEC, python="echo", env={}), "with_prefix_cache"))
    out = subprocess.run(["bash", str(path), "1234"], capture_output=True, text=True, check=True).stdout
    assert "--port 1234" in out and out.strip().endswith("--enable-prefix-caching")


def fake_script(tmp_path, body: str):
    path = tmp_path / "fake.sh"
    path.write_text("#!/usr/bin/env bash\nPORT=$1\n" + textwrap.dedent(body))
    return path


def test_server_that_dies_fails_fast_with_log_tail(tmp_path):
    script = fake_script(tmp_path, "echo 'ValueError: no such model: /nope'\nexit 3\n")
    t0 = time.monotonic()
    with pytest.raises(ServerError) as exc:
        with ManagedServer(script, "127.0.0.1", tmp_path / "server.log", ready_timeout_s=60, engine=VLLM):
            pass
    assert time.monotonic() - t0 < 10
    assert "exited with code 3" in str(exc.value) and "no such model" in str(exc.value)
    assert str(tmp_path / "server.log") in str(exc.value)


def test_readiness_timeout_kills_the_whole_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    script = fake_script(tmp_path, f"sleep 300 &\necho $! > {pidfile}\nsleep 300\n")
    with pytest.raises(ServerError, match="not ready after 2 s"):
        with ManagedServer(script, "127.0.0.1", tmp_path / "server.log", ready_timeout_s=2, term_grace_s=2, engine=VLLM):
            pass
    child = int(pidfile.read_text())
    assert not _alive(child), "background child of the server survived teardown"


def test_ready_server_is_torn_down_on_exit(tmp_path):
    script = fake_script(
        tmp_path,
        f"""
        exec {sys.executable} -c "
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b'{{}}')
http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()" $PORT
    """,
    )
    with ManagedServer(script, "127.0.0.1", tmp_path / "server.log", ready_timeout_s=20, engine=VLLM) as srv:
        pgid = srv.proc.pid
        assert group_alive(pgid)
    assert not group_alive(pgid)


def test_sigterm_to_the_owner_tears_the_server_down(tmp_path):
    """A SIGTERM (Snakemake or SLURM cancelling the job) must still run teardown."""
    pidfile = tmp_path / "server.pid"
    owner = tmp_path / "owner.py"
    owner.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))!r})
        from pathlib import Path
        from prefixbench.engines import engine_for
        from prefixbench.server import ManagedServer
        script = Path({str(tmp_path)!r}) / "slow.sh"
        script.write_text("#!/usr/bin/env bash\\necho $$ > {pidfile}\\nsleep 300\\n")
        with ManagedServer(script, "127.0.0.1", Path({str(tmp_path)!r}) / "log", ready_timeout_s=300, term_grace_s=2, engine=engine_for("vllm")):
            pass
    """)
    )
    proc = subprocess.Popen([sys.executable, str(owner)])
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        time.sleep(0.1)
    server_pid = int(pidfile.read_text())
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=15)
    deadline = time.monotonic() + 5
    while _alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(server_pid)


def test_port_taken_by_another_server_is_never_measured(tmp_path, monkeypatch, fake_vllm_port):
    """Two jobs on one node can get the same free port: the loser restarts on a fresh port, and never
    mistakes the winner's server (here a stand-in already listening) for its own."""
    import prefixbench.server as server_mod

    fake = FAKE_VLLM
    other_port = fake_vllm_port
    ports = iter([other_port])
    real_free_port = server_mod.free_port
    monkeypatch.setattr(server_mod, "free_port", lambda host="127.0.0.1": next(ports, None) or real_free_port(host))
    script = fake_script(tmp_path, f"exec {sys.executable} {fake} $PORT\n")
    with ManagedServer(script, "127.0.0.1", tmp_path / "server.log", ready_timeout_s=20, engine=VLLM) as srv:
        assert srv.port != other_port
        assert srv.owns_port()
        assert srv.base_url.endswith(f":{srv.port}")
    log = (tmp_path / "server.log").read_text()
    assert f"port {other_port}" in log and "restarting on port" in log
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", other_port)) == 0, "the other job's server was touched"


def test_a_port_the_caller_chose_is_kept(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        script = fake_script(tmp_path, f"exec {sys.executable} {FAKE_VLLM} $PORT\n")
        with pytest.raises(ServerError):
            with ManagedServer(script, "127.0.0.1", tmp_path / "server.log", ready_timeout_s=2, port=port, engine=VLLM):
                pass


def test_a_managed_server_is_ready_when_its_engine_says_healthy(tmp_path):
    """Readiness polls the engine's health path (vLLM: /health), not /v1/models: the stand-in's /v1/models is down."""
    script = fake_script(tmp_path, f"FAKE_MODELS_DOWN=1 exec {sys.executable} {FAKE_VLLM} $PORT\n")
    with ManagedServer(script, "127.0.0.1", tmp_path / "server.log", ready_timeout_s=20, engine=VLLM) as srv:
        assert srv.startup_s is not None and VLLM.health_path == "/health"


def test_a_server_gets_its_own_environment_on_top_of_ours(tmp_path, monkeypatch):
    """A replica's cores or GPU reach its process; the rest of the environment is ours."""
    monkeypatch.setenv("PB_OURS", "kept")
    seen = tmp_path / "env"
    script = fake_script(tmp_path, f'echo "$PB_OURS $PB_REPLICA" > {seen}\nexec {sys.executable} {FAKE_VLLM} $PORT\n')
    with ManagedServer(script, "127.0.0.1", tmp_path / "log", ready_timeout_s=20, engine=VLLM, env={"PB_REPLICA": "3"}):
        assert seen.read_text().split() == ["kept", "3"]
