"""The charts, registered in one place: each chart's name, where the report shows it, its caption file, and which
runs draw it.

The rules read this module (CHART_NAMES, the charts rule's outputs and their captions) and so does the report
(its Charts section and the charts placed beside their findings); charts.DRAW holds each chart's drawing. It
imports no Altair, so parsing the workflow stays light. Adding a chart: a ChartSpec here, a drawing in charts.DRAW,
a caption in report/charts/NAME.rst, and, if it belongs beside a finding rather than in the Charts section, a
`chart("NAME")` in the template.
"""

from __future__ import annotations

from dataclasses import dataclass

ALWAYS, WITH_RATES, WITH_SHAPES = "always", "request_rates", "shapes"
EXTENSIONS = ("png", "svg")


@dataclass(frozen=True)
class ChartSpec:
    name: str
    title: str  # the image's alternative text in the report
    section: str  # "charts": the report's Charts section; otherwise the finding it sits beside (a chart("NAME") call)
    drawn: str = ALWAYS  # ALWAYS, or only in runs with open-loop rates (WITH_RATES) or workload shapes (WITH_SHAPES)

    @property
    def caption(self) -> str:
        """The caption of the chart in Snakemake's report, relative to the repository root."""
        return f"report/charts/{self.name}.rst"


CHARTS = (
    ChartSpec("ttft_vs_concurrency", "TTFT vs concurrency", "charts"),
    ChartSpec("throughput_vs_p95", "Throughput vs p95 latency", "charts"),
    ChartSpec("speedup", "Speed-up vs prefix length and reuse", "charts"),
    ChartSpec("ideal", "Expected vs measured", "ideal"),
    ChartSpec("open_loop", "Open loop", "goodput", WITH_RATES),
    ChartSpec("shapes", "Workload shapes", "shapes", WITH_SHAPES),
)
BY_NAME = {c.name: c for c in CHARTS}


def charts_for(*, rates: bool, shapes: bool) -> list[ChartSpec]:
    """The charts a run draws: every chart, less those for open-loop rates or workload shapes it does not run."""
    kept = {ALWAYS: True, WITH_RATES: rates, WITH_SHAPES: shapes}
    return [c for c in CHARTS if kept[c.drawn]]


def chart_names(*, rates: bool, shapes: bool) -> list[str]:
    return [c.name for c in charts_for(rates=rates, shapes=shapes)]


def chart_files(names: list[str], outdir: str = "results/charts") -> list[str]:
    """Each chart's files, PNG then SVG, chart by chart (the charts rule's outputs)."""
    return [f"{outdir}/{n}.{ext}" for n in names for ext in EXTENSIONS]
