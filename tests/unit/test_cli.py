"""The `prefixbench` command: argument parsing, the config it builds (merge, selection, validation) and the Snakemake
commands it would run. Nothing here starts Snakemake: the exec is replaced by a recorder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefixbench import cli

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


@pytest.fixture
def clone(tmp_path, monkeypatch):
    """A stand-in clone: the real config and schema, a Snakefile; the command's repo_root points at it."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    (tmp_path / "Snakefile").write_text("# stand-in\n")
    monkeypatch.setattr(cli, "repo_root", lambda package_dir=None: tmp_path)
    return tmp_path


@pytest.fixture
def executed(monkeypatch):
    """The command `_exec` would have replaced the process with, instead of running it."""
    calls: list[tuple[Path, list[str]]] = []
    monkeypatch.setattr(cli, "_exec", lambda root, cmd: calls.append((root, cmd)) or 0)
    return calls


def written(clone: Path) -> dict:
    return yaml.safe_load((clone / cli.RUN_CONFIG).read_text())


# --- parsing -----------------------------------------------------------------------------------------------------


def test_run_flags_and_passthrough():
    args = cli.parse_args(["run", "--target", "cpu", "--regime", "medium", "--concurrency", "1", "4", "--", "-p", "all"])
    assert (args.command, args.target, args.regime, args.concurrency) == ("run", "cpu", ["medium"], [1, 4])
    assert args.snakemake_args == ["-p", "all"]
    assert args.dry_run is False and args.configfile is None and args.reuse is None


def test_unknown_target_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse_args(["run", "--target", "tpu"])
    assert e.value.code == 2 and "invalid choice: 'tpu'" in capsys.readouterr().err


def test_endpoint_options():
    args = cli.parse_args(
        ["endpoint", "http://127.0.0.1:8000", "--api-key-env", "KEY", "--block-size", "16", "--reuse", "100", "0"]
    )
    assert (args.url, args.api_key_env, args.block_size, args.target, args.reuse) == (
        "http://127.0.0.1:8000",
        "KEY",
        16,
        "endpoint",
        [100, 0],
    )


def test_help_is_light():
    """`prefixbench --help` answers without loading YAML, polars, Snakemake or the package's heavy modules."""
    code = "import sys; import prefixbench.cli as c\ntry: c.main(['--help'])\nexcept SystemExit: pass\nprint(sorted(m for m in ('yaml', 'polars', 'snakemake', 'jsonschema', 'prefixbench.config') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT / "scripts", check=True).stdout
    assert "usage: prefixbench" in out and "prefixbench endpoint" in out
    assert out.strip().splitlines()[-1] == "[]"


# --- the config --------------------------------------------------------------------------------------------------


def test_user_regimes_replace_the_defaults_and_mappings_merge():
    user = {
        "regimes": {"tiny": {"prefix_tokens": 128, "workload": "chat_policy", "reuse_pcts": [100]}},
        "benchmark": {"concurrency": [2]},
    }
    merged = cli.merge_config(DEFAULT, user)
    assert list(merged["regimes"]) == ["tiny"]
    assert merged["benchmark"]["concurrency"] == [2]  # a list replaces
    assert merged["benchmark"]["max_tokens"] == DEFAULT["benchmark"]["max_tokens"]  # a mapping merges key by key
    assert merged["targets"] == DEFAULT["targets"] and merged["shapes"] == DEFAULT["shapes"]
    assert list(DEFAULT["regimes"]) == ["medium", "large"]  # the inputs are not changed


def test_user_shapes_replace_the_defaults():
    merged = cli.merge_config(DEFAULT, {"shapes": {"pool": {"kind": "prefix_pool", "documents": 8}}})
    assert merged["shapes"] == {"pool": {"kind": "prefix_pool", "documents": 8}}


def test_nested_regimes_key_is_not_special():
    """Only the top-level regimes/shapes replace whole; a key of that name deeper down merges like any mapping."""
    merged = cli.merge_config({"a": {"regimes": {"x": 1}}}, {"a": {"regimes": {"y": 2}}})
    assert merged == {"a": {"regimes": {"x": 1, "y": 2}}}


def test_complete_user_config_is_used_as_it_is():
    user = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    assert cli.is_complete(user)
    assert cli.combine(DEFAULT, user) == user
    assert cli.combine(DEFAULT, None) == DEFAULT


_leaf = st.one_of(st.integers(0, 3), st.lists(st.integers(0, 3), max_size=2))
_tree = st.recursive(_leaf, lambda kids: st.dictionaries(st.sampled_from("ab"), kids, max_size=2), max_leaves=4)
_config = st.dictionaries(st.sampled_from(["regimes", "shapes", "benchmark", "x"]), _tree, max_size=3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_config, _config)
def test_merge_properties(base, override):
    merged = cli.merge_config(base, override)
    assert set(merged) == set(base) | set(override)
    for key, value in override.items():
        if not isinstance(value, dict) or key in cli.REPLACED_KEYS or not isinstance(base.get(key), dict):
            assert merged[key] == value  # replaced whole
    assert cli.merge_config(merged, override) == merged  # applying the same file again changes nothing
    assert cli.merge_config(base, {}) == base


def test_flags_select_regimes_shapes_concurrency_reuse():
    config = cli.apply_flags(DEFAULT, target="gpu", regimes=["large"], shapes=["pool"], concurrency=[8, 1, 8], reuse=[0, 100])
    assert config["target"] == "gpu"
    assert list(config["regimes"]) == ["large"] and list(config["shapes"]) == ["pool"]
    assert config["benchmark"]["concurrency"] == [1, 8]
    assert config["regimes"]["large"]["reuse_pcts"] == [100, 0]
    assert cli.apply_flags(DEFAULT, shapes=["none"])["shapes"] == {}
    assert cli.apply_flags(DEFAULT) == DEFAULT


def test_unknown_regime_lists_the_known_ones():
    with pytest.raises(cli.CliError, match=r"unknown regime huge; the config defines: medium, large"):
        cli.apply_flags(DEFAULT, regimes=["medium", "huge"])
    with pytest.raises(cli.CliError, match=r"unknown shape chats; the config defines: chat, pool"):
        cli.apply_flags(DEFAULT, shapes=["chats"])


def test_endpoint_target_drops_only_the_defaults_time_budget():
    config = cli.apply_flags(DEFAULT, target="endpoint")
    assert "time_budget_s" not in cli.drop_default_time_budget(config, None)["benchmark"]
    user = {"benchmark": {"time_budget_s": 60}}
    assert cli.drop_default_time_budget(cli.merge_config(config, user), user)["benchmark"]["time_budget_s"] == 60
    assert cli.drop_default_time_budget(DEFAULT, None)["benchmark"]["time_budget_s"] == 360  # not an endpoint


def test_schema_errors_name_the_key():
    assert cli.schema_errors(DEFAULT) == []
    bad = cli.merge_config(DEFAULT, {"benchmark": {"concurrency": [0]}})
    assert any(e.startswith("benchmark.concurrency.0:") for e in cli.schema_errors(bad))


# --- the run command ---------------------------------------------------------------------------------------------


def test_run_writes_the_complete_config_and_builds_the_snakemake_command(clone, executed, tmp_path_factory):
    mine = tmp_path_factory.mktemp("user") / "mine.yaml"
    mine.write_text("regimes:\n  short:\n    prefix_tokens: 256\n    workload: rag_document\n    reuse_pcts: [100, 0]\n")
    rc = cli.main(["run", "--configfile", str(mine), "--concurrency", "2", "--shape", "none", "--dry-run", "--", "--keep-going"])
    assert rc == 0
    config = written(clone)
    assert list(config["regimes"]) == ["short"] and config["shapes"] == {} and config["benchmark"]["concurrency"] == [2]
    assert config["targets"] == DEFAULT["targets"]
    ((root, cmd),) = executed
    assert root == clone
    assert cmd == [sys.executable, "-m", "snakemake", "--keep-going", "--dry-run", "--cores", "1", "--resources", "gpu=1",
                   "--configfile", str(clone / cli.RUN_CONFIG)]  # fmt: skip


def test_run_refuses_an_invalid_config_before_snakemake(clone, executed, capsys):
    assert cli.main(["run", "--reuse", "150"]) == 2
    err = capsys.readouterr().err
    assert "does not fit config/schema/config.schema.yaml" in err and "regimes.medium.reuse_pcts.0" in err
    assert executed == [] and not (clone / cli.RUN_CONFIG).exists()


def test_run_unknown_regime_is_a_clear_error(clone, executed, capsys):
    assert cli.main(["run", "--regime", "xl"]) == 2
    assert "unknown regime xl; the config defines: medium, large" in capsys.readouterr().err and executed == []


def test_missing_configfile_is_a_clear_error(clone, executed, capsys):
    assert cli.main(["run", "--configfile", str(clone / "nope.yaml")]) == 2
    assert "cannot read the config file" in capsys.readouterr().err


def test_repo_root_outside_a_clone(tmp_path):
    package = tmp_path / "site-packages" / "prefixbench"
    package.mkdir(parents=True)
    with pytest.raises(cli.CliError, match="not inside a clone"):
        cli.repo_root(package)
    assert cli.repo_root(ROOT / "scripts" / "prefixbench") == ROOT


# --- endpoint, compare, report -----------------------------------------------------------------------------------

SECTION = {
    "endpoints": {
        "no_prefix_cache": {"base_url": "http://127.0.0.1:8000", "model": "m"},
        "with_prefix_cache": {"base_url": "http://127.0.0.1:8000", "model": "m"},
    },
    "tokenizer": "tok",
    "max_model_len": 2048,
    "block_size": 16,
}


def test_endpoint_probes_then_runs_the_endpoint_target(clone, executed, monkeypatch):
    seen = {}

    def endpoint_config(url, **kw):
        seen.update(url=url, **kw)
        return SECTION

    monkeypatch.setitem(sys.modules, "prefixbench.endpoint_probe", types.SimpleNamespace(endpoint_config=endpoint_config))
    assert cli.main(["endpoint", "http://127.0.0.1:8000", "--block-size", "16", "--regime", "medium"]) == 0
    assert seen == {
        "url": "http://127.0.0.1:8000",
        "model": None,
        "tokenizer": None,
        "api_key_env": None,
        "max_model_len": None,
        "block_size": 16,
    }
    config = written(clone)
    assert config["target"] == "endpoint" and config["targets"]["endpoint"] == SECTION
    assert "time_budget_s" not in config["benchmark"] and list(config["regimes"]) == ["medium"]
    assert len(executed) == 1


def test_a_probe_refusal_is_one_clear_line(clone, executed, monkeypatch, capsys):
    class ProbeError(RuntimeError):
        pass

    def endpoint_config(url, **kw):
        raise ProbeError("prefix caching is off: start vLLM with --enable-prefix-caching")

    probe = types.SimpleNamespace(endpoint_config=endpoint_config, ProbeError=ProbeError)
    monkeypatch.setitem(sys.modules, "prefixbench.endpoint_probe", probe)
    assert cli.main(["endpoint", "http://127.0.0.1:9"]) == 2
    assert (
        capsys.readouterr().err
        == "prefixbench: error: http://127.0.0.1:9: prefix caching is off: start vLLM with --enable-prefix-caching\n"
    )
    assert executed == []


def test_missing_modules_are_named(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "prefixbench.endpoint_probe", None)
    monkeypatch.setitem(sys.modules, "prefixbench.compare", None)
    assert cli.main(["endpoint", "http://127.0.0.1:8000"]) == 2
    assert "needs prefixbench.endpoint_probe" in capsys.readouterr().err
    assert cli.main(["compare", "a", "b"]) == 2
    assert "needs prefixbench.compare" in capsys.readouterr().err


def test_compare_passes_its_arguments(monkeypatch):
    seen = []
    monkeypatch.setitem(sys.modules, "prefixbench.compare", types.SimpleNamespace(main=lambda argv: seen.append(argv) or 0))
    assert cli.main(["compare", "runs/a", "runs/b", "-o", "out"]) == 0
    assert cli.main(["compare", "runs/a", "runs/b"]) == 0
    assert seen == [["runs/a", "runs/b", "-o", "out"], ["runs/a", "runs/b"]]


def test_report_renders_in_place_without_measuring(clone, monkeypatch):
    for f in ("results/calibration.json", "results/raw/medium_r100/no_prefix_cache/server.json", "results/raw/x/kv/server.json"):
        (clone / f).parent.mkdir(parents=True, exist_ok=True)
        (clone / f).write_text("{}")
    measured = cli.measured_outputs(clone)
    assert measured == [
        "results/calibration.json",
        "results/raw/medium_r100/no_prefix_cache/server.json",
        "results/raw/x/kv/server.json",
    ]
    ran = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, cwd: ran.append((cmd, cwd)) or types.SimpleNamespace(returncode=0))
    assert cli.main(["report"]) == 0
    assert [cwd for _, cwd in ran] == [clone] * 3
    prepare, touch, render = (cmd for cmd, _ in ran)
    assert prepare[prepare.index("--configfile") + 1] == str(clone / "config" / "config.yaml")  # no run-config yet
    assert prepare[-len(measured) - 5 :] == ["--omit-from", "calibrate", "measure", "measure_kv", "--", *measured]
    assert touch[-len(measured) - 2 :] == ["--touch", "--", *measured]
    assert "measure" not in render[render.index("--allowed-rules") :] and "report" in render


def test_report_without_recorded_outputs(clone, capsys):
    assert cli.main(["report"]) == 2
    assert "nothing recorded" in capsys.readouterr().err


def test_endpoint_target_without_an_endpoint_section(clone, executed, capsys):
    assert cli.main(["run", "--target", "endpoint"]) == 2
    assert "target endpoint needs targets.endpoint: use `prefixbench endpoint URL`" in capsys.readouterr().err
    assert executed == []
