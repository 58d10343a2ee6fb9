#!/usr/bin/env bash
# Stage what scripts/device_sweep.sh needs on a GPU machine that reaches no package registry and takes at most
# 64 MiB per call (the working tree included): vLLM 0.26.0, its dependency wheels and the wheels in
# envs/device-extra.txt as one tar, cut into parts that fit beside this tree (.device/p1 .. pN, one per call, each
# copied to /tmp/vllm-parts), and .device/deps (install-all.sh and the tar's sha256: a few bytes) for the working call.
# The dependency wheels (42 MiB) travel in the parts: beside a tree of 30 MiB they no longer fit one call. All
# git-ignored.
#   bash scripts/device_stage.sh
# Then: one call per part carrying .device/pK with
#   mkdir -p /tmp/vllm-parts && cp .device/p*/part.* /tmp/vllm-parts/
# back to back, and a working call carrying .device/deps that starts with
#   bash .device/deps/install-all.sh && export PYTHONPATH=/tmp/site VLLM_USE_FLASHINFER_SAMPLER=0 && ...
# vLLM's router (replicated targets) travels in a part of its own, .device/router (the vllm-router wheel, 23.7 MB,
# and orjson, at the versions envs/server-gpu.lock pins), copied by one more call carrying it with
#   mkdir -p /tmp/vllm-parts/router && cp .device/router/*.whl /tmp/vllm-parts/router/
# and installed by install-all.sh into /tmp/site2 when present: the working call then adds /tmp/site2 to PYTHONPATH
# and finds the router at /tmp/site2/bin/vllm-router (the target's router.binary).
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
shared=${DEVICE_SHARED:-../shared/device}
bash "$shared/stage.sh" > /dev/null  # vLLM's wheel and its 86 dependency wheels (cached), .device/deps
cache=${DEVICE_WHEEL_CACHE:-/tmp/device-wheels}
extra=$cache/extra
mkdir -p "$extra"
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
grep -v '^#' envs/device-extra.txt | while read -r spec; do
  [[ -z $spec ]] && continue
  python3 -m pip download -q --no-deps "${plat[@]}" -d "$extra" "$spec" 2>/dev/null \
    || python3 -m pip wheel -q --no-deps -w "$extra" "$spec"  # a pure-Python sdist (connection-pool) becomes a wheel
done
# The router and its one extra dependency, pinned as the GPU server environment pins them.
router_cache=$cache/router
mkdir -p "$router_cache"
router_specs=$(grep -oE '^(vllm-router|orjson)==[^ ]+' envs/server-gpu.lock)
[[ $(wc -l <<< "$router_specs") -eq 2 ]] || { echo "envs/server-gpu.lock pins no vllm-router/orjson" >&2; exit 1; }
python3 -m pip download -q --no-deps "${plat[@]}" -d "$router_cache" $router_specs
blob=$(mktemp -d)
cp "$cache"/vllm/vllm-0.26.0-*.whl "$extra"/*.whl .device/deps/*.whl "$blob"/
rm -f .device/deps/*.whl
rm -rf .device/p* .device/router && mkdir -p .device/blob .device/router
for spec in $router_specs; do
  name=${spec%%==*}; version=${spec#*==}
  cp "$router_cache"/"${name//-/_}"-"$version"-*.whl .device/router/
done
tar cf .device/blob/all.tar -C "$blob" .
rm -rf "$blob"
(cd .device/blob && sha256sum all.tar > ../deps/all.sha256)
# Each part travels with the tracked tree: leave it 2 MiB of room under the 64 MiB a call may carry.
tree_mib=$(( ($(git ls-files -z | du --apparent-size -cb --files0-from=- | tail -n 1 | cut -f1) >> 20) + 1 ))
part_mib=$(( 62 - tree_mib ))
(cd .device/blob && split -b "${part_mib}M" -d -a 2 all.tar part.) && rm .device/blob/all.tar
n=0
for p in .device/blob/part.*; do n=$((n + 1)); mkdir -p ".device/p$n"; mv "$p" ".device/p$n/"; done
rmdir .device/blob
cat > .device/deps/install-all.sh <<'SH'
#!/usr/bin/env bash
# ON the GPU machine, from the checkout's root, once every part is in /tmp/vllm-parts: join, check, install.
set -euo pipefail
if [ ! -d /tmp/site/vllm ]; then
  cat /tmp/vllm-parts/part.* > /tmp/all.tar
  (cd /tmp && sha256sum -c "$OLDPWD/.device/deps/all.sha256")
  mkdir -p /tmp/whl && tar xf /tmp/all.tar -C /tmp/whl
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site /tmp/whl/*.whl
fi
# vLLM's router, when its part was copied (.device/router): console script /tmp/site2/bin/vllm-router.
if compgen -G "/tmp/vllm-parts/router/*.whl" > /dev/null && [ ! -x /tmp/site2/bin/vllm-router ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site2 /tmp/vllm-parts/router/*.whl
fi
SH
du -sh .device/*
echo "tree ${tree_mib} MiB, parts ${part_mib} MiB: carry .device/p1 .. .device/p$n one per call (and .device/router for replicas), then .device/deps"
