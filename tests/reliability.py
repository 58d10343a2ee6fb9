"""docs/RELIABILITY.md from the fault-injection tests' observations (results/reliability/*.json).

Rendered on purpose, not as a side effect of a test run: after `./run.sh test`,

    .venv/bin/python tests/reliability.py

renders the document from the observations the fault tests left (each test overwrites its own scenario).
"""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path

SCENARIOS = {
    "s1_bad_flag": "1. Server cannot start: bad flag",
    "s1_bad_model": "1. Server cannot start: bad model path",
    "s1_port_taken": "1. Server cannot start: port taken",
    "s2_engine_killed": "2. Server dies mid-point (engine process killed)",
    "s3_stall": "3. Server stalls mid-stream",
    "s4_malformed": "4. Malformed responses, within and over the error budget",
    "s5_sigterm_snakemake": "5. SIGTERM to snakemake mid-measurement, then a rerun",
    "s5_sigint_start": "5b. Ctrl-C during a server's start",
    "s6_bad_config": "6. Bad configuration (schema, cross-checks, fuzzing)",
    "s7_soak": "7. Soak: many requests at high concurrency",
    "s8_api_key": "Security: a planted API key",
    "s9_slurm_cancel": "9. SLURM job cancelled mid-measurement (scancel)",
    "s10_replica_died": "10. A replica dies mid-point (behind the router)",
    "s10_router_cannot_start": "10b. The router will not start (bad flag)",
    "s10_router_no_binary": "10b'. The router will not start (no vllm-router binary)",
    "s10_unknown_policy": "10c. A routing policy the router does not know (config)",
    "s10_replica_not_ready": "10d. A replica that never becomes ready",
}


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def render_reliability(obs_dir: Path, out: Path) -> None:
    found = {p.stem: json.loads(p.read_text()) for p in sorted(Path(obs_dir).glob("*.json"))}
    lines = [
        "# Reliability: fault injection, measured",
        "",
        f"_Rendered by `tests/reliability.py` from the fault tests of `./run.sh test` on {datetime.now(UTC):%Y-%m-%d} "
        f"({platform.machine()}, Python {platform.python_version()}) from the observations each fault test "
        "recorded; rerun the tests, then that command, to regenerate it._",
        "",
        "| scenario | injected | observed |",
        "|---|---|---|",
    ]
    for key, title in SCENARIOS.items():
        o = found.get(key)
        if o is None:
            lines.append(f"| {title} | — | not recorded |")
            continue
        observed = "; ".join(f"{k}: {_cell(v)}" for k, v in o["observed"].items())
        lines.append(f"| {title} | {_cell(o['injected'])} | {observed} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    obs = root / "results" / "reliability"
    missing = sorted(set(SCENARIOS) - {p.stem for p in obs.glob("*.json")})
    if missing:
        raise SystemExit(f"no observation for {', '.join(missing)} in {obs}: run ./run.sh test first")
    render_reliability(obs, root / "docs" / "RELIABILITY.md")
    print(f"wrote {root / 'docs' / 'RELIABILITY.md'}")


if __name__ == "__main__":
    main()
