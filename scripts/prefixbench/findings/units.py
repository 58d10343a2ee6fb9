"""How the report shows latencies: milliseconds everywhere, in prose and in tables (a reader should never convert
0.02935 s in their head). The recorded CSVs keep seconds; only what the report prints is converted here.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from ..formatting import markdown_table


def fmt_ms_value(ms: float) -> str:
    """Milliseconds to three significant digits, never in exponent form: 9.35, 29.4, 212, 1830."""
    a = abs(ms)
    return f"{ms:.0f}" if a >= 100 else f"{ms:.1f}" if a >= 10 else f"{ms:.2f}"


def fmt_s(seconds: float | None) -> str:
    """A latency in prose, always in whole milliseconds (`29 ms`, `1020 ms`; formatting.fmt_s switched to seconds
    above 1 s, which put `1.02 s → 50 ms` side by side on a CPU)."""
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


def fmt_ms(seconds: float | None) -> str:
    """A latency given in seconds, shown in milliseconds: `29.4 ms`."""
    return "n/a" if seconds is None else f"{fmt_ms_value(seconds * 1000)} ms"


def is_latency(column: str) -> bool:
    """A column of seconds the report shows in ms: every `*_s` column but a point's wall time and the rates
    (`tok_s`, `req_s`: per second, not seconds)."""
    return column.endswith("_s") and not column.endswith(("tok_s", "req_s")) and column != "wall_s"


def ms_table(df: pl.DataFrame, columns: Sequence[str]) -> str:
    """A markdown table of `columns` with every latency column in milliseconds (`mean_ttft_s` shown as
    `mean_ttft_ms`, 0.02935 as 29.4); other columns as markdown_table shows them."""
    shown, names = [], []
    for c in columns:
        if is_latency(c) and c in df.columns:
            name = c[: -len("_s")] + "_ms"
            values = [None if v is None else fmt_ms_value(v * 1000) for v in df[c].to_list()]
            shown.append(pl.Series(name, values, dtype=pl.Utf8))
            names.append(name)
        else:
            shown.append(df[c])
            names.append(c)
    return markdown_table(pl.DataFrame(shown), names)


def fmt_s_range(bounds: tuple[float, float]) -> str:
    """A range of latencies in prose, one value said once (`24127 ms`, never `24127 ms–24127 ms`)."""
    lo, hi = fmt_s(bounds[0]), fmt_s(bounds[1])
    return lo if lo == hi else f"{lo}–{hi}"
