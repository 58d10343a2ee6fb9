"""The design of the experiment: which points a server lifetime measures, in which order lifetimes and points run.

Run order must not be confounded with the cache setting: a server that starts second finds warm compile
caches, a machine warms up, a neighbour's load comes and goes. So each cache setting runs in k server
lifetimes (instances), interleaved in a counterbalanced order (ABBA: off, on, on, off, off, on, ...),
the seed choosing which setting opens; within an instance the points run in a seeded random order, the
same for both settings of that instance and different between instances.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from . import MODES
from .shapes import KINDS, Shape

if TYPE_CHECKING:
    from .prompts import Regime

T = TypeVar("T")


def slot_order(instances: int, seed: int) -> list[tuple[str, int]]:
    """(mode, instance) in the order the server lifetimes run: pairs alternate which setting goes first."""
    first = random.Random(f"slots:{seed}").randrange(2)
    order: list[tuple[str, int]] = []
    for i in range(1, instances + 1):
        a, b = MODES if (i - 1 + first) % 2 == 0 else MODES[::-1]
        order += [(a, i), (b, i)]
    return order


def previous_slot(mode: str, instance: int, instances: int, seed: int) -> tuple[str, int] | None:
    """The lifetime that runs just before (mode, instance), or None for the first."""
    order = slot_order(instances, seed)
    at = order.index((mode, instance))
    return order[at - 1] if at else None


def kv_order(slots: Sequence[tuple[str, int]]) -> list[str]:
    """The settings of the small-KV lifetimes, which run after the main ones in the order the first pair used."""
    return [mode for mode, _ in slots[:2]]


def server_infos(slots: Sequence[tuple[str, int]], kv_modes: Sequence[str]) -> list[str]:
    """Each lifetime's server.json in run order: the DAG's chain (rules/design.smk) and the order
    scripts/device_sweep.sh runs the measuring jobs in."""
    return [server_info(m, lifetime_name(i)) for m, i in slots] + [server_info(m, KV_LIFETIME) for m in kv_modes]


def point_order(points: Sequence[T], seed: int, instance: int) -> list[T]:
    """The points of one instance in a seeded random order (identical for off and on of that instance)."""
    out = list(points)
    random.Random(f"points:{seed}:{instance}").shuffle(out)
    return out


RAW_DIR = "results/raw"
KV_LIFETIME = "kv"  # the small-KV lifetimes: one per setting, after the main ones
PointKey = tuple[str, int, int, float]  # (regime or shape, reuse %, concurrency, request rate): 0 rate = closed loop


def lifetime_name(instance: int | str) -> str:
    """The folder of main lifetime `instance` (`i1`, `i2`, ...; "{instance}" gives the rules' wildcard)."""
    return f"i{instance}"


def point_stem(concurrency: int, request_rate: float) -> str:
    """A point's file stem and label: `c{concurrency}` closed loop, `rate{rate:g}` open loop."""
    return f"rate{request_rate:g}" if request_rate else f"c{concurrency}"


def point_path(mode: str, lifetime: str, point: PointKey, suffix: str) -> str:
    """Where one point of one lifetime writes (`suffix`: jsonl for its records, meta.json for its totals)."""
    regime, reuse, concurrency, rate = point
    return f"{RAW_DIR}/{mode}/{lifetime}/{regime}/reuse{reuse}_{point_stem(concurrency, rate)}.{suffix}"


def server_info(mode: str, lifetime: str) -> str:
    """A lifetime's server.json (what started, when, on what hardware)."""
    return f"{RAW_DIR}/{mode}/{lifetime}/server.json"


def lifetime_points(
    regimes: Mapping[str, Regime], shapes: Mapping[str, Shape], concurrency: Sequence[int], rates: Sequence[float]
) -> tuple[list[PointKey], list[PointKey]]:
    """Every point of a main server lifetime, and of the small-KV lifetimes: each regime at each reuse level, closed
    loop at every concurrency then open loop at every rate; then each workload shape as one level (reuse 100: every
    request follows the shape's own sharing) at its kind's loads, in the small-KV lifetimes where its kind asks for a
    small cache (kv_overflow: each working set one at a time, so the cache model can be exact)."""
    loads = [(c, 0.0) for c in concurrency] + [(0, r) for r in rates]
    main: list[PointKey] = [(n, reuse, c, q) for n, regime in regimes.items() for reuse in regime.reuse_pcts for c, q in loads]
    small_kv: list[PointKey] = []
    for name, shape in shapes.items():
        kind = KINDS[shape.kind]
        (small_kv if kind.kv_capacity(shape) else main).extend(
            (name, 100, c, q) for c, q in kind.loads(shape, concurrency, rates)
        )
    return main, small_kv
