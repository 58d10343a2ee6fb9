"""The charts, registered in one place: each chart's name, where the report shows it, its caption file, and which
runs draw it.

The rules read this module (CHART_NAMES, the charts rule's outputs and their captions) and so does the report
(its Charts section and the charts placed beside their findings); charts.DRAW holds each chart's drawing. It
imports no Altair, so parsing the workflow stays light. Adding a chart: a ChartSpec here, a drawing in charts.DRAW,
a caption in report/charts/NAME.rst, and, if it belongs beside a finding rather than in the Charts section, a
`chart("NAME")` in the template.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

ALWAYS, WITH_RATES, WITH_SHAPES = "always", "request_rates", "shapes"
WITH_ROUTER = "router"  # a replicated target: replicas behind vLLM's router (issue 23)
# Charts of one workload shape kind: drawn where the run has a shape of that kind (ChartSpec.drawn = "kind:NAME").
WITH_KV, WITH_TRACE = "kind:kv_overflow", "kind:trace"
# Each chart's files: the PNG (the markdown report), the SVG, and its Vega-Lite spec with the data inline, which the
# HTML report embeds so the chart is interactive there (html_report reads NAME.vl.json).
EXTENSIONS = ("png", "svg", "vl.json")


@dataclass(frozen=True)
class ChartSpec:
    name: str
    title: str  # the image's alternative text in the report
    section: str  # "charts": the report's Charts section; otherwise the finding it sits beside (a chart("NAME") call)
    # ALWAYS, or only in runs with open-loop rates (WITH_RATES), workload shapes (WITH_SHAPES), a shape of one kind
    # (WITH_KV, WITH_TRACE: "kind:NAME") or a router (WITH_ROUTER)
    drawn: str = ALWAYS

    @property
    def caption(self) -> str:
        """The caption of the chart in Snakemake's report, relative to the repository root."""
        return f"report/charts/{self.name}.rst"


CHARTS = (
    ChartSpec("contrasts", "Every contrast with its 95% interval", "verdict"),
    ChartSpec("ttft_vs_concurrency", "TTFT vs concurrency", "charts"),
    ChartSpec("throughput_vs_p95", "Throughput vs p95 latency", "charts"),
    ChartSpec("speedup", "Speed-up vs prefix length and reuse", "charts"),
    ChartSpec("ttft_distribution", "TTFT distributions, cache off vs on", "charts"),
    ChartSpec("ideal", "Expected vs measured", "ideal"),
    ChartSpec("open_loop", "Open loop", "goodput", WITH_RATES),
    ChartSpec("shapes", "Workload shapes", "shapes", WITH_SHAPES),
    ChartSpec("kv_capacity", "Hit rate vs KV capacity", "shapes", WITH_KV),
    ChartSpec("trace_capacity", "The trace's capacity curve", "shapes", WITH_TRACE),
    ChartSpec("replicas", "Hit rates, TTFT and load per routing policy", "replicas", WITH_ROUTER),
    ChartSpec("routing_curve", "Simulation: hit rate vs replica count", "replicas", WITH_ROUTER),
)
BY_NAME = {c.name: c for c in CHARTS}


def charts_for(*, rates: bool, shapes: bool | Collection[str], router: bool = False) -> list[ChartSpec]:
    """The charts a run draws: every chart, less those for open-loop rates, workload shapes or a router it does not
    run.

    `shapes`: the kinds of the run's workload shapes (a chart of one kind is drawn only where the run has that kind),
    or just whether it has any (then every shape chart is drawn, and one whose kind is missing says so in its image).
    `router`: the target runs replicas behind vLLM's router."""
    kept = {ALWAYS: True, WITH_RATES: rates, WITH_SHAPES: bool(shapes), WITH_ROUTER: router}

    def drawn(c: ChartSpec) -> bool:
        if not c.drawn.startswith("kind:"):
            return kept[c.drawn]
        return shapes is True or (not isinstance(shapes, bool) and c.drawn.removeprefix("kind:") in shapes)

    return [c for c in CHARTS if drawn(c)]


def chart_names(*, rates: bool, shapes: bool | Collection[str], router: bool = False) -> list[str]:
    return [c.name for c in charts_for(rates=rates, shapes=shapes, router=router)]


def chart_files(names: list[str], outdir: str = "results/charts") -> list[str]:
    """Each chart's files, chart by chart: PNG, SVG, then the Vega-Lite spec (the charts rule's outputs)."""
    return [f"{outdir}/{n}.{ext}" for n in names for ext in EXTENSIONS]
