"""A polars scalar of a numeric column, typed as the number it is.

`Series.mean()`, `.min()`, `.max()` and `series[i]` are typed as any Python literal polars can hold (a date, a
string, bytes, a list, ...), since a column's dtype is known only when the code runs. On the numeric columns the
pipeline reads they are an int or a float, or None where the column is empty or all null. These functions state that
for the type checker and hand the value back unchanged: an int stays an int, so what it prints does not change
(f"{3}" is "3", f"{3.0}" is "3.0").

They check nothing at run time on purpose: a value that is not what its column promises fails where it is used, as
before, and report.guarded writes that exception's type into the report, so checking here would change the text."""

from __future__ import annotations

from typing import cast


def num(value: object) -> float:
    """A number (int or float): a statistic of a numeric column that has values."""
    return cast(float, value)


def opt_num(value: object) -> float | None:
    """A number, or None where the column had no value to give."""
    return cast("float | None", value)


def whole(value: object) -> int:
    """An int: a statistic or cell of an integer column (concurrency, reuse level) that has values."""
    return cast(int, value)
