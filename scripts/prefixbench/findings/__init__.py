"""The report's findings: each answer to a seed question, and the sentence it supports, computed from the data.

An effect is claimed only where its clustered 95% interval excludes 1 and clears the run's A/A floor (see
stats.outside_floor), and a closed-loop gain only where the point's hit rate can explain it (hit_bound_of);
without an interval it is shown, not claimed. The template only arranges these.

One module per job: `units` (latencies in ms), `claims` (the claim rule every other part judges by), `derived` (throughput at a common p95,
its floors, goodput), `controls` (the A/A section), `checks` (the cross-checks and how latencies were measured),
`answers` (the seed's questions), `models` (the hit-rate blend and the FLOPs ideal), `conclusion` (the
consulting-ready bullets), `lead` (the first screen: the run in one line and the verdict table, from
contrasts.csv). Imports point down that list: `claims` judges and imports only `units`.
"""

from ..formatting import fmt_pct, fmt_x, markdown_table
from ..shapes.base import ReportKit
from .answers import (
    goodput_finding,
    how_judged,
    memory_finding,
    prefix_length_finding,
    remote_memory_finding,
    reuse_finding,
    reuse_tracks,
    same_concurrency,
    throughput_finding,
    ttft_finding,
)
from .checks import (
    GAP_FLAG_FRAC,
    GAP_FLAG_S,
    cold_warm_table,
    cross_checks,
    design_note,
    hit_flags,
    timing_flags,
)
from .claims import (
    NOISE,
    Finding,
    beyond_hits,
    ci_of,
    floor_of,
    helped,
    hit_bound_of,
    hurt,
    judged,
    load_label,
    measured,
    point_name,
    rows_of,
    saved,
    unmeasured_words,
    verdict,
    why_unmeasured,
)
from .conclusion import (
    consulting_bullets,
)
from .controls import (
    aa_finding,
    aa_row,
    aa_table,
    aa_words,
    cost_of_leaving_it_on,
    flag_cost_words,
    instance_words,
)
from .derived import (
    goodput_rows,
    interpolate,
    throughput_at_p95,
    throughput_curve,
    throughput_floors,
)
from .lead import (
    Verdicts,
    read_contrasts,
    run_line,
    verdicts,
)
from .models import (
    hit_rate_model,
    ideal_finding,
)
from .units import fmt_ms, fmt_s, ms_table

# What the workload shapes' findings are handed (shapes.base.ReportKit): the report's formats and this claim rule.
KIT = ReportKit(judged=judged, fmt_pct=fmt_pct, fmt_s=fmt_s, fmt_x=fmt_x, markdown_table=markdown_table)

__all__ = [
    "KIT",
    "NOISE",
    "verdict",
    "ci_of",
    "floor_of",
    "hit_bound_of",
    "beyond_hits",
    "judged",
    "why_unmeasured",
    "measured",
    "saved",
    "unmeasured_words",
    "point_name",
    "helped",
    "hurt",
    "Finding",
    "rows_of",
    "load_label",
    "interpolate",
    "throughput_curve",
    "throughput_at_p95",
    "throughput_floors",
    "goodput_rows",
    "aa_row",
    "aa_words",
    "aa_finding",
    "instance_words",
    "aa_table",
    "flag_cost_words",
    "cost_of_leaving_it_on",
    "GAP_FLAG_S",
    "GAP_FLAG_FRAC",
    "timing_flags",
    "hit_flags",
    "cross_checks",
    "design_note",
    "cold_warm_table",
    "ttft_finding",
    "how_judged",
    "same_concurrency",
    "throughput_finding",
    "memory_finding",
    "remote_memory_finding",
    "reuse_finding",
    "reuse_tracks",
    "prefix_length_finding",
    "goodput_finding",
    "hit_rate_model",
    "ideal_finding",
    "consulting_bullets",
    "Verdicts",
    "read_contrasts",
    "run_line",
    "verdicts",
    "fmt_ms",
    "ms_table",
]
