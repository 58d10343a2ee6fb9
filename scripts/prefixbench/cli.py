"""The `prefixbench` command: the pipeline's common one-off runs without writing a config file.

Snakemake stays the engine: `prefixbench run` builds one complete config (the default config/config.yaml, a user's
file over it, then the flags), validates it against the schema and hands it to `snakemake --configfile` in this
clone. A complete config is written because Snakemake merges a `--configfile` over the Snakefile's default key by
key, so a smaller file could never drop the default's regimes; here a user's `regimes` and `shapes` replace the
default's. The module imports only the standard library at its top so that `prefixbench --help` answers at once;
YAML, the schema and the endpoint probe load inside the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TARGETS = ("cpu", "gpu", "endpoint")
# Collections a user's config replaces whole: a user who names regimes (or shapes) means those, not the default's too.
REPLACED_KEYS = ("regimes", "shapes")
# The keys the schema requires: a user's file with all of them is a complete config, used as it is (the run
# `snakemake --configfile FILE` makes, as for the repository's own config/*.yaml), not merged over the default.
COMPLETE_KEYS = ("regimes", "benchmark", "targets")
RUN_CONFIG = Path(".prefixbench") / "run-config.yaml"  # under the clone's root; gitignored
# What `prefixbench report` may run: the steps after the measurements, as scripts/rerender.sh allows them.
RENDER_RULES = ("aggregate", "charts", "regime_table", "report", "contrasts", "results_json", "html_report", "all")


class CliError(Exception):
    """A usage problem the user can fix; `main` prints it as one line and exits 2."""


# ---------------------------------------------------------------------------------------------------------------
# Where the pipeline is


def repo_root(package_dir: Path | None = None) -> Path:
    """The clone that holds this package: the Snakefile lives there, not in the package (an editable install)."""
    here = package_dir or Path(__file__).resolve().parent
    root = here.parents[1]
    if not (root / "Snakefile").is_file() or not (root / "config" / "config.yaml").is_file():
        raise CliError(
            f"the prefixbench package at {here} is not inside a clone of the prefixbench repository (no Snakefile "
            f"and config/config.yaml at {root}); the pipeline runs from a clone: clone it and `pip install -e .` there"
        )
    return root


# ---------------------------------------------------------------------------------------------------------------
# The config: merge, select, validate


def merge_config(base: dict[str, Any], override: dict[str, Any], *, top: bool = True) -> dict[str, Any]:
    """`override` over `base`: mappings merge key by key, anything else (lists, scalars) replaces; at the top level
    the regimes and shapes of `override` replace the default's whole. Neither input is changed."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not (top and key in REPLACED_KEYS):
            out[key] = merge_config(out[key], value, top=False)
        else:
            out[key] = copy.deepcopy(value)
    return out


def is_complete(user: dict[str, Any]) -> bool:
    """Whether a user's config holds every section the schema requires (then it is the whole config)."""
    return all(key in user for key in COMPLETE_KEYS)


def combine(default: dict[str, Any], user: dict[str, Any] | None) -> dict[str, Any]:
    """The run's config before the flags: a complete user config as it is, a partial one over the default."""
    if not user:
        return copy.deepcopy(default)
    return copy.deepcopy(user) if is_complete(user) else merge_config(default, user)


def _keep(kind: str, names: Sequence[str], known: dict[str, Any]) -> dict[str, Any]:
    unknown = [n for n in names if n not in known]
    if unknown:
        listed = ", ".join(known) or "none"
        raise CliError(f"unknown {kind} {', '.join(unknown)}; the config defines: {listed}")
    return {n: known[n] for n in dict.fromkeys(names)}


def apply_flags(
    config: dict[str, Any],
    *,
    target: str | None = None,
    regimes: Sequence[str] | None = None,
    shapes: Sequence[str] | None = None,
    concurrency: Sequence[int] | None = None,
    reuse: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The command line's one-off changes on a copy of `config`: the target, only the named regimes and shapes
    (`shapes=["none"]` drops them all), the concurrency levels, and every kept regime's reuse levels."""
    out = copy.deepcopy(config)
    if target:
        out["target"] = target
    if regimes:
        out["regimes"] = _keep("regime", regimes, out.get("regimes") or {})
    if shapes:
        out["shapes"] = {} if list(shapes) == ["none"] else _keep("shape", shapes, out.get("shapes") or {})
    if concurrency:
        out.setdefault("benchmark", {})["concurrency"] = sorted(set(concurrency))
    if reuse:
        levels = sorted(set(reuse), reverse=True)
        for regime in out.get("regimes", {}).values():
            regime["reuse_pcts"] = list(levels)
    return out


def drop_default_time_budget(config: dict[str, Any], user: dict[str, Any] | None) -> dict[str, Any]:
    """For target: endpoint, the default's benchmark.time_budget_s goes: it sizes points with a calibration start of
    a server prefixbench owns, which an endpoint is not (prefixbench.config.check refuses it). A user's own value
    stays, so that the check names it."""
    if config.get("target") != "endpoint" or "time_budget_s" in ((user or {}).get("benchmark") or {}):
        return config
    out = copy.deepcopy(config)
    out.get("benchmark", {}).pop("time_budget_s", None)
    return out


def schema_errors(config: dict[str, Any]) -> list[str]:
    """Where `config` breaks config/config.schema.yaml (the schema Snakemake validates against), one line each."""
    import jsonschema  # type: ignore[import-untyped]  # no stubs in the environment (as results_file.py)
    import yaml

    from .config import SCHEMA_PATH

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '(top level)'}: {e.message}" for e in errors]


def load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise CliError(f"cannot read the config file {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise CliError(f"{path} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CliError(f"{path}: a config file is a mapping of keys (regimes:, benchmark:, ...), not a {type(data).__name__}")
    return data


def build_config(root: Path, args: argparse.Namespace, endpoint_section: dict[str, Any] | None = None) -> dict[str, Any]:
    """The complete, validated config of one run: the default, the user's file, the endpoint, the flags."""
    default = load_yaml(root / "config" / "config.yaml")
    user = load_yaml(Path(args.configfile)) if args.configfile else None
    config = combine(default, user)
    target = args.target
    if endpoint_section is not None:
        config.setdefault("targets", {})["endpoint"] = endpoint_section
        target = "endpoint"
    config = apply_flags(
        config, target=target, regimes=args.regime, shapes=args.shape, concurrency=args.concurrency, reuse=args.reuse
    )
    config = drop_default_time_budget(config, user)
    if config.get("target") == "endpoint" and "endpoint" not in config.get("targets", {}):
        raise CliError("target endpoint needs targets.endpoint: use `prefixbench endpoint URL`, or give it in --configfile")
    if problems := schema_errors(config):
        raise CliError("the config does not fit config/schema/config.schema.yaml:\n  " + "\n  ".join(problems))
    return config


def write_config(root: Path, config: dict[str, Any]) -> Path:
    """The complete config, where Snakemake reads it (and `prefixbench report` finds it again)."""
    import yaml

    path = root / RUN_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Written by `prefixbench run`: the complete config of the last run (default + your file + flags).\n"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------------------------
# The Snakemake commands


def snakemake_run_cmd(configfile: Path, extra: Sequence[str] = (), *, dry_run: bool = False) -> list[str]:
    """The pipeline's command: one machine (cores 1, the one GPU as a resource), the complete config. The user's
    extra arguments (targets, flags) come first: after `--resources gpu=1` a target would be read as a resource."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        *extra,
        *(["--dry-run"] if dry_run else []),
        "--cores",
        "1",
        "--resources",
        "gpu=1",
        "--configfile",
        str(configfile),
    ]


def measured_outputs(root: Path) -> list[str]:
    """The recorded measurements in results/ (the outputs of calibrate, measure, measure_kv), relative to `root`."""
    results = root / "results"
    found = [results / "calibration.json"] if (results / "calibration.json").is_file() else []
    found += sorted(results.glob("raw/*/*/server.json"))
    return sorted({str(p.relative_to(root)) for p in found})


def report_cmds(configfile: Path, measured: Sequence[str], extra: Sequence[str] = ()) -> list[list[str]]:
    """scripts/rerender.sh's three steps on results/ in place: rebuild the deterministic inputs (prompts, server
    scripts) without measuring, mark the recorded measurements up to date, then render: aggregation, charts,
    tables, the report, results.json and the HTML. Nothing starts a server."""
    smk = [sys.executable, "-m", "snakemake", "--configfile", str(configfile), "--cores", "2", "--resources", "gpu=1"]
    return [
        [*smk, "--omit-from", "calibrate", "measure", "measure_kv", "--", *measured],
        [*smk, "--touch", "--", *measured],
        [*smk, *extra, "--allowed-rules", *RENDER_RULES, "--forcerun", "aggregate"],
    ]


# ---------------------------------------------------------------------------------------------------------------
# The subcommands


def _exec(root: Path, cmd: list[str]) -> int:
    """Snakemake in this process's place (signals such as Ctrl-C and SIGTERM reach it directly)."""
    print("prefixbench: " + " ".join(cmd[2:] if cmd[1:2] == ["-m"] else cmd), file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.flush()
    os.chdir(root)
    os.execv(cmd[0], cmd)
    return 0  # not reached


def cmd_run(args: argparse.Namespace, endpoint_section: dict[str, Any] | None = None) -> int:
    root = repo_root()
    config = build_config(root, args, endpoint_section)
    path = write_config(root, config)
    print(f"prefixbench: config written to {path.relative_to(root)}", file=sys.stderr)
    return _exec(root, snakemake_run_cmd(path, args.snakemake_args, dry_run=args.dry_run))


def cmd_endpoint(args: argparse.Namespace) -> int:
    try:  # imported by name: the module is another helper's and loads only for this subcommand
        probe = importlib.import_module("prefixbench.endpoint_probe")
    except ImportError as e:
        raise CliError(f"`prefixbench endpoint` needs prefixbench.endpoint_probe, which this checkout lacks ({e})") from e
    # The probe's own refusal (a server it cannot measure, with what to do) is a usage problem: one line, exit 2.
    refusal: type[Exception] | tuple[()] = getattr(probe, "ProbeError", ())
    try:
        section = probe.endpoint_config(
            args.url,
            model=args.model,
            tokenizer=args.tokenizer,
            api_key_env=args.api_key_env,
            max_model_len=args.max_model_len,
            block_size=args.block_size,
        )
    except refusal as e:
        raise CliError(f"{args.url}: {e}") from e
    return cmd_run(args, endpoint_section=section)


def cmd_compare(args: argparse.Namespace) -> int:
    try:
        compare_main = importlib.import_module("prefixbench.compare").main
    except ImportError as e:
        raise CliError(f"`prefixbench compare` needs prefixbench.compare, which this checkout lacks ({e})") from e
    argv = [args.run_a, args.run_b, *(["-o", args.output] if args.output else [])]
    return int(compare_main(argv) or 0)


def cmd_report(args: argparse.Namespace) -> int:
    import subprocess

    root = repo_root()
    configfile = Path(args.configfile).resolve() if args.configfile else None
    if configfile is None:
        configfile = root / RUN_CONFIG if (root / RUN_CONFIG).is_file() else root / "config" / "config.yaml"
    measured = measured_outputs(root)
    if not measured:
        raise CliError(
            f"nothing recorded in {root / 'results'} (no calibration.json, no raw/*/*/server.json): run a benchmark first"
        )
    print(f"prefixbench: re-rendering results/ from its recorded outputs with {configfile}", file=sys.stderr)
    for cmd in report_cmds(configfile, measured, args.snakemake_args):
        if (rc := subprocess.run(cmd, cwd=root).returncode) != 0:
            return rc
    return 0


# ---------------------------------------------------------------------------------------------------------------
# The parser


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--configfile", metavar="FILE", help="your config: a partial one goes over config/config.yaml "
                   "(its regimes and shapes replace the default's); one with regimes, benchmark and targets is used as it is")  # fmt: skip
    p.add_argument("--regime", nargs="+", metavar="NAME", help="run only these regimes (e.g. medium)")
    p.add_argument("--shape", nargs="+", metavar="NAME", help="run only these workload shapes; `none` for none")
    p.add_argument("--concurrency", nargs="+", type=int, metavar="N", help="the concurrency levels (e.g. 1 4 16)")
    p.add_argument("--reuse", nargs="+", type=int, metavar="PCT", help="every regime's reuse levels in %% (e.g. 100 0)")
    p.add_argument("--dry-run", action="store_true", help="show the jobs Snakemake would run, run none")


EPILOG = """examples:
  prefixbench run                                  the default benchmark (what ./run.sh runs)
  prefixbench run --regime medium --concurrency 1 --shape none
  prefixbench run --target gpu --configfile my.yaml
  prefixbench endpoint http://127.0.0.1:8000 --tokenizer HuggingFaceTB/SmolLM2-135M-Instruct
  prefixbench compare docs/results/run-a docs/results/run-b -o /tmp/compare
  prefixbench report                               re-render results/ from its recorded outputs

Arguments after `--` go to snakemake unchanged (e.g. `prefixbench run -- --keep-going`)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefixbench",
        description="Measure what vLLM's automatic prefix caching buys (Snakemake pipeline of this clone).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the benchmark pipeline", description="Run the benchmark pipeline (Snakemake).")
    run.add_argument("--target", choices=TARGETS, help="where vLLM runs (default: the config's target: auto = gpu if present)")
    _add_run_options(run)
    run.set_defaults(func=cmd_run)

    ep = sub.add_parser(
        "endpoint",
        help="benchmark one running OpenAI-compatible server (caching on)",
        description="Benchmark one running OpenAI-compatible server that has prefix caching on: probes its "
        "/v1/models and /metrics, then runs the pipeline with target: endpoint.",
    )
    ep.add_argument("url", help="the server's base URL, e.g. http://127.0.0.1:8000")
    ep.add_argument("--model", help="the served model name (default: the one /v1/models lists)")
    ep.add_argument("--tokenizer", help="tokenizer folder or hub id (default: the served model's)")
    ep.add_argument("--api-key-env", metavar="VAR", help="environment variable that holds the API key")
    ep.add_argument("--max-model-len", type=int, metavar="N", help="the server's context length (default: probed)")
    ep.add_argument("--block-size", type=int, metavar="N", help="its KV-cache block size (default: probed)")
    _add_run_options(ep)
    ep.set_defaults(func=cmd_endpoint, target="endpoint")

    cmp = sub.add_parser("compare", help="compare two result folders", description="Compare two runs' results.")
    cmp.add_argument("run_a", metavar="RUN_A", help="a result folder (results/ or docs/results/<run>)")
    cmp.add_argument("run_b", metavar="RUN_B", help="the other result folder")
    cmp.add_argument("-o", "--output", metavar="OUT", help="where to write the comparison")
    cmp.set_defaults(func=cmd_compare)

    rep = sub.add_parser(
        "report",
        help="re-render the report from results/ (no measuring)",
        description="Re-render the report, charts, results.json and HTML from the outputs recorded in results/.",
    )
    rep.add_argument("--configfile", metavar="FILE", help="the run's config (default: the last `prefixbench run`'s, "
                     "else config/config.yaml)")  # fmt: skip
    rep.set_defaults(func=cmd_report)
    return parser


def split_passthrough(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """The command's own arguments, and those after the first `--` (for snakemake)."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    own, passthrough = split_passthrough(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(own)
    args.snakemake_args = passthrough
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as e:
        print(f"prefixbench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
