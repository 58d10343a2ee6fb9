#!/usr/bin/env bash
# Re-render a published run's report from its recorded outputs with this checkout's code, in a scratch copy of the
# tree: the run's outputs (docs/results/<run>/run_outputs.tar.xz, or a results/ folder) are unpacked, the prompts and
# server scripts rebuilt (deterministic: the same files), the measuring jobs marked up to date (snakemake --touch),
# and aggregation, charts, tables and the report run. Copies the report, summary/speedup/shape CSVs and charts to OUT.
# A refactor that changes no number leaves OUT byte-identical to a render made before it (diff -r).
#   bash scripts/rerender.sh docs/results/h200-2026-12-01-paired /tmp/render-after
#   bash scripts/rerender.sh results /tmp/render-cpu config/config.yaml     # a local run: its results/ and config
set -euo pipefail
src=$(realpath "$1") out=$(realpath -m "$2")
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
config=$(realpath "${3:-$src/config.yaml}")
tmp=$(mktemp -d /tmp/rerender.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
(cd "$root" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$tmp" 2>/dev/null || true)
# The pipeline's environment: .venv (./run.sh makes it), or the test environment (./run.sh test) where only that exists.
pipeline_env=.venv
[[ -x $root/.venv/bin/snakemake || ! -x $root/.venv-dev/bin/snakemake ]] || pipeline_env=.venv-dev
ln -s "$root/$pipeline_env" "$tmp/.venv"
ln -s "$root/.venv-server" "$tmp/.venv-server"
mkdir -p "$tmp/resources/models"
for m in "$root"/resources/models/*/; do ln -sfn "$m" "$tmp/resources/models/$(basename "$m")"; done
cp "$config" "$tmp/rerender.yaml"
cd "$tmp"
rm -rf results && mkdir results
if [[ -f $src/run_outputs.tar.xz ]]; then tar xJf "$src/run_outputs.tar.xz"; else cp -r "$src"/. results/; fi
smk=(.venv/bin/snakemake --configfile rerender.yaml --cores 2 --resources gpu=1 --config target="$(.venv/bin/python -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1])).get('target','cpu'))" rerender.yaml | sed 's/auto/cpu/')")
measured=(results/calibration.json $(ls results/raw/*/*/server.json results/raw/*/kv/server.json 2>/dev/null || true))
"${smk[@]}" --omit-from calibrate measure measure_kv -- "${measured[@]}" > "$tmp/prepare.log" 2>&1 || { tail -n 20 "$tmp/prepare.log"; exit 1; }
"${smk[@]}" --touch -- "${measured[@]}" > "$tmp/touch.log" 2>&1 || { tail -n 20 "$tmp/touch.log"; exit 1; }
"${smk[@]}" --allowed-rules aggregate charts regime_table report contrasts results_json html_report all --forcerun aggregate > "$tmp/render.log" 2>&1 \
  || { tail -n 30 "$tmp/render.log"; exit 1; }
mkdir -p "$out"
# The report (markdown, and HTML where the code makes one), every CSV table and JSON result the render wrote.
cp results/prefix_caching_results.md "$out"/
for f in results/*.csv results/*.json results/*.html; do [[ -f $f ]] && cp "$f" "$out"/; done
[[ -d results/charts ]] && cp -r results/charts "$out"/
echo "rendered $src -> $out"
