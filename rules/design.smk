# The experiment design: which points every server lifetime measures, in which order the lifetimes run, and where
# each writes (the names come from prefixbench.design, which measure also uses).
from prefixbench.design import (
    KV_LIFETIME,
    kv_order,
    lifetime_points,
    lifetime_name,
    point_path,
    server_info,
    server_infos,
    slot_order,
)

# Server lifetimes per cache setting, run interleaved in a counterbalanced order (prefixbench.design).
INSTANCES = config["benchmark"]["instances"]
SLOTS = slot_order(INSTANCES, config["seed"])
# Every measurement point of a main server lifetime and of the small-KV lifetimes (prefixbench.design): regimes at
# each reuse level and load, then each workload shape at its kind's loads.
POINTS, KV_POINTS = lifetime_points(REGIMES, SHAPES, CONCURRENCY, RATES)


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
