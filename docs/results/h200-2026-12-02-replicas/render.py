"""Render the Across-replicas tables of the 2026-12-02 H200 run from its recorded outputs (run_outputs.tar.xz).

The device's time budget stopped the cache-on lifetime during its third point (`medium`, paired), after the `pool` and
`chat` points had finished under all three policies, three passes each. A stopped lifetime writes no server.json, so
this script takes the replicas' URLs from their own server logs ("http://127.0.0.1:PORT", the first URL each logs),
writes them beside the cache-off lifetime's server.json fields, and runs prefixbench.replicas_analysis on the two
finished points (their records and meta files, as the lifetime wrote them). Nothing else is changed or typed in.

    tar xJf run_outputs.tar.xz -C /tmp/rep && PYTHONPATH=scripts python docs/results/h200-2026-12-02-replicas/render.py /tmp/rep OUT
"""

import json
import re
import sys
from pathlib import Path

from prefixbench.replicas_analysis import ReplicaTables, router_run, routing_module, write_replica_tables

src, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
cfg_target = {
    "python": ".venv-server/bin/python",
    "replicas": 2,
    "router": {"policies": ["cache_aware", "round_robin", "consistent_hash"]},
}
raw = src / "results" / "raw"
info = json.loads((raw / "no_prefix_cache" / "i1" / "server.json").read_text())
replicas = []
for r in info["replicas"]:
    log = src / "results" / "logs" / f"server_with_prefix_cache_i1_r{r['index']}.log"
    port = int(re.search(r"http://127\.0\.0\.1:(\d+)", log.read_text(errors="replace")).group(1))
    replicas.append({**r, "base_url": f"http://127.0.0.1:{port}", "port": port, "log": str(log.relative_to(src))})
on_info = out / "server_with_prefix_cache_i1.json"
on_info.write_text(json.dumps({**info, "mode": "with_prefix_cache", "replicas": replicas,
                               "reconstructed": "replica URLs from the replicas' logs: the lifetime was stopped"}, indent=2))
points = ["pool", "chat"]
records = [raw / m / "i1" / p / "reuse100_c8.jsonl" for m in ("no_prefix_cache", "with_prefix_cache") for p in points]
metas = [raw / m / "i1" / p / "reuse100_c8.meta.json" for m in ("no_prefix_cache", "with_prefix_cache") for p in points]
prompts = [src / "results" / "prompts" / "shapes" / f"{p}.jsonl" for p in points]
run = router_run(cfg_target)
tables = ReplicaTables(*(out / f"{n}.csv" for n in ("replica_requests", "replica_points", "replica_contrasts", "routing_sim", "routing_curve")))
write_replica_tables(records, metas, prompts, 16, run, tables, routing_module(),
                     [raw / "no_prefix_cache" / "i1" / "server.json", on_info])
print("wrote", *sorted(p.name for p in out.iterdir()))

# The report's "Across replicas" section and its two charts, from those tables, as the pipeline renders them.
from prefixbench.charts import save_chart  # noqa: E402
from prefixbench.charts_replicas import replicas_chart, routing_curve_chart  # noqa: E402
from prefixbench.findings.replicas import replicas_section  # noqa: E402
from prefixbench.replicas_analysis import read_table  # noqa: E402

pts, con, sim, curve = (read_table(p) for p in (tables.points, tables.contrasts, tables.sim, tables.curve))
sec = replicas_section(pts, con, sim, curve, info["router"])
parts = ["## Across replicas", sec.intro, sec.table, "Load per replica:", sec.load_table, sec.contrasts_table,
         "\n".join(f"- {w}" for w in sec.words), sec.sim_table, "![replicas](charts/replicas.png)", sec.curve,
         "![routing curve](charts/routing_curve.png)"]
(out / "replicas_section.md").write_text("\n\n".join(p for p in parts if p) + "\n")
(out / "charts").mkdir(exist_ok=True)
save_chart(replicas_chart(pts), out / "charts", "replicas")
save_chart(routing_curve_chart(curve, pts), out / "charts", "routing_curve")
print("wrote replicas_section.md and charts/")
