"""How numbers look in the report: durations, ratios, intervals, percentages, markdown tables."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl


def fmt_s(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def fmt_x(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.2f}×"


def fmt_ci(lo: float | None, hi: float | None) -> str:
    return "no interval (too few rounds)" if lo is None or hi is None else f"{lo:.2f}–{hi:.2f}"


def fmt_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def markdown_table(df: pl.DataFrame, columns: Sequence[str]) -> str:
    def cell(v: object) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(cell(r[c]) for c in columns) + " |\n" for r in df.iter_rows(named=True))
