# Input functions and params builders the rules share: the lifetime chain, the model folders, each script's code.
from prefixbench.design import previous_slot


def after_previous_kv_lifetime(wildcards):
    """The lifetime before this small-KV one: the last main lifetime, or the other setting's small-KV one."""
    at = KV_ORDER.index(wildcards.mode)
    return [SERVER_INFOS[len(SLOTS) - 1 + at]]


def after_previous_lifetime(wildcards):
    """The server lifetime that runs just before this one: the interleaved order is a chain in the DAG."""
    prev = previous_slot(wildcards.mode, int(wildcards.instance), INSTANCES, config["seed"])
    return [server_info(prev[0], lifetime_name(prev[1]))] if prev else []


def measure_params(points, kv=False):
    """The params of a measuring job, one lifetime's points and the run's settings: one builder for `measure` and
    `measure_kv` (a small-KV lifetime measures the server prefixbench starts, as instance 1)."""
    return dict(
        points=points,
        bench=BENCH,
        host=config["server"]["host"],
        ready_timeout_s=config["server"]["ready_timeout_s"],
        served_name=MODEL["served_name"],
        python=TARGET.get("python", ""),
        engine=TARGET["engine"],
        target=TARGET_NAME,
        model=MODEL,
        endpoint={} if kv else lambda w: TARGET["endpoints"][w.mode] if ENDPOINT_MODE else {},
        description=TARGET.get("description", ""),
        dtype_choice=DTYPE_CHOICE.as_dict() if DTYPE_CHOICE else {},
        instance=1 if kv else lambda w: int(w.instance),
    )


def model_inputs():
    """Model folders the pipeline builds itself; hub ids and user paths are not Snakemake files."""
    if MODEL["source"] in ("smollm2_package", "dummy"):
        return [MODEL["path"]]
    return []


def tokenizer_inputs():
    source = pbconfig.tokenizer_source(TARGET)
    return [source] if source in model_inputs() else []


def package_files(script):
    """The package modules the rule's edge script runs, derived from its imports: editing one reruns the rule."""
    return pbconfig.script_closure(os.path.join(SCRIPTS_DIR, f"{script}.py"))
