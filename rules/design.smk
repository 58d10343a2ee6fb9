# The experiment design: which points every server lifetime measures, in which order the lifetimes run, and where
# each writes (the names come from prefixbench.design, which measure also uses).
from prefixbench.design import (
    KV_LIFETIME,
    kv_order,
    lifetime_name,
    point_path,
    server_info,
    server_infos,
    slot_order,
)

# Server lifetimes per cache setting, run interleaved in a counterbalanced order (prefixbench.design).
INSTANCES = config["benchmark"]["instances"]
SLOTS = slot_order(INSTANCES, config["seed"])
# Every measurement point of one server lifetime: (regime, reuse %, concurrency, request rate);
# closed-loop points have rate 0, open-loop points concurrency 0.
POINTS = [
    (name, reuse, conc, rate)
    for name, regime in REGIMES.items()
    for reuse in regime.reuse_pcts
    for conc, rate in [(c, 0.0) for c in CONCURRENCY] + [(0, r) for r in RATES]
] + [
    # A shape is one level (reuse 100: every request follows the shape's own sharing) at its kind's loads.
    (name, 100, conc, rate)
    for name in MAIN_SHAPES
    for conc, rate in KINDS[SHAPES[name].kind].loads(SHAPES[name], CONCURRENCY, RATES)
]
# The small-KV lifetimes (kv_overflow: each working set one at a time, so the cache model can be exact).
KV_POINTS = [
    (name, 100, conc, rate)
    for name in KV_SHAPES
    for conc, rate in KINDS[SHAPES[name].kind].loads(SHAPES[name], CONCURRENCY, RATES)
]


# A main lifetime and a small-KV one, as the rules' outputs (the {mode} and {instance} wildcards kept).
LIFETIME = lifetime_name("{instance}")
LIFETIME_INFO = server_info("{mode}", LIFETIME)
KV_INFO = server_info("{mode}", KV_LIFETIME)


def point_files(suffix, points=None, lifetime=LIFETIME):
    """Per-point outputs of one server lifetime (the {mode} and {instance} wildcards are kept)."""
    return [point_path("{mode}", lifetime, p, suffix) for p in (POINTS if points is None else points)]


# The small-KV lifetimes run after the main ones, off and on in the order the seed's first pair used.
KV_ORDER = kv_order(SLOTS) if KV_SHAPES else []
SERVER_INFOS = server_infos(SLOTS, KV_ORDER)


def all_point_files(suffix):
    main = [f.format(mode=m, instance=i) for m, i in SLOTS for f in point_files(suffix)]
    return main + [f.format(mode=m) for m in KV_ORDER for f in point_files(suffix, KV_POINTS, KV_LIFETIME)]
