#!/usr/bin/env bash
# Runs ON the lent GPU machine (NVIDIA H200, CUDA 13 image, Python, no Node, no network; field notes §7), from a
# checkout that carries bench/device/dist (made by bench/device/pack.sh):
#
#   bash bench/device/run.sh OUT_DIR
#
# 1. reports the machine (nvidia-smi, Vulkan loader and NVIDIA ICD files, driver capabilities) into OUT_DIR/env.txt;
# 2. unpacks Node, the pruned onnxruntime-node and the bundled scripts into $DEVICE_WORK (default /tmp/mega-asr-device);
# 3. probes onnxruntime-node's WebGPU provider (over NVIDIA's Vulkan driver) with a tiny graph;
# 4. generates the full-size stand-in there (npm run fixture-model's code, bundled);
# 5. runs bench:step on the webgpu provider with both decoder backends (--backend both: the webgpu backend, whose
#    cache stays on the GPU, then the host backend, whose cache crosses to JavaScript and back every step, on the
#    same GPU) at batch 1,8,32 x context 128,600 unless the probe found no adapter, and the host backend on the cpu
#    provider (batch 1) for comparison; then one line per measured row in summary.txt: ms per step, tokens/s,
#    audio seconds per second at the speech rate of the packed clips (app/clips: decode steps alone, and with each
#    clip's prefill; the encoder not counted; bench:step's audioNote says how) and the bytes a step moved between
#    JavaScript and the device each way.
# Each stage has a hard time limit, cut further so the whole run ends within RUN_LIMIT (440 s) with the CPU
# comparison's CPU_RESERVE (90 s) kept for it. Everything is logged to OUT_DIR/run.log, the stage outcomes and the
# rows to OUT_DIR/summary.txt, bench:step's reports to OUT_DIR/step-webgpu-1-8.json, step-webgpu-32.json,
# step-cpu-1.json (each written after each backend, so a process stopped at its limit keeps what it measured),
# nvidia-smi's samples during the WebGPU steps to OUT_DIR/gpu-usage.csv (at most 8 files, as the device tool returns).
# Exit 0 when every stage ran, 3 when WebGPU had no adapter (the CPU comparison still runs), 1 otherwise.
#
# Overrides (environment): STANDIN_ARGS (default "--full-size --stop-after 64"), WEBGPU_BATCHES ("1,8 32": one
# bench:step process per group), WEBGPU_BACKEND (both; webgpu or host measures one), CPU_BATCH (1), CONTEXTS
# (128,600), STEP_ARGS (extra bench:step flags, default "--steps 8"), LIMIT_GEN / LIMIT_WEBGPU (each group) /
# LIMIT_CPU (seconds: 120 / 150 / 90), RUN_LIMIT, CPU_RESERVE, DEVICE_WORK.
set -uo pipefail

out=${1:?usage: bash bench/device/run.sh OUT_DIR}
mkdir -p "$out" && out=$(cd "$out" && pwd)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dist=$root/bench/device/dist
work=${DEVICE_WORK:-/tmp/mega-asr-device}
standin_args=${STANDIN_ARGS:---full-size --stop-after 64}
step_args=${STEP_ARGS:---steps 8}
contexts=${CONTEXTS:-128,600}
exec > >(tee -a "$out/run.log") 2>&1
# At exit, let tee write the last lines before the script's end is taken as the run's end.
tee_pid=$!
trap 'exec >&- 2>&-; wait "$tee_pid"' EXIT
export ORT_DISABLE_TELEMETRY=1

started=$SECONDS
summary=()
note() { echo "== $(date -u +%H:%M:%S) [$((SECONDS - started)) s] $*"; }
record() { summary+=("$1"); echo "$1" >>"$out/summary.txt"; }
die() { note "STOP: $*"; record "STOP: $*"; exit 1; }
: >"$out/summary.txt"
rm -f "$out"/step-*.json # an earlier run's reports would be summarised as this one's
# Paths of a library in the linker cache (awk reads all of ldconfig's output: no SIGPIPE under pipefail).
ldfind() { ldconfig -p 2>/dev/null | awk -v name="$1" '$1 == name && /x86-64/ {print $NF}'; }

# --- 1. the machine ------------------------------------------------------------------------------------------
icd_candidates=(/usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json
  /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/local/share/vulkan/icd.d/nvidia_icd.json)
{
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -srm), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "## nvidia-smi"; nvidia-smi 2>&1 || echo "(nvidia-smi failed)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,pcie.link.gen.max --format=csv 2>&1
  echo "## CUDA / Python"; (nvcc --version 2>&1 | tail -n 2) || echo "(no nvcc)"
  python3 -c 'import sys, onnx, onnxruntime, numpy; print(sys.version.split()[0], "onnx", onnx.__version__, "onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__)' 2>&1
  echo "## container"
  echo "NVIDIA_DRIVER_CAPABILITIES=${NVIDIA_DRIVER_CAPABILITIES-<unset>} NVIDIA_VISIBLE_DEVICES=${NVIDIA_VISIBLE_DEVICES-<unset>}"
  echo "## Vulkan"
  echo "loader: $(ldfind libvulkan.so.1 | grep . || echo 'none in ldconfig (the bundled one will be used)')"
  for d in /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d /usr/local/share/vulkan/icd.d; do
    [ -d "$d" ] && for f in "$d"/*.json; do [ -f "$f" ] && { echo "ICD $f:"; cat "$f"; echo; }; done
  done
  echo "libGLX_nvidia.so.0: $(ldfind libGLX_nvidia.so.0 | grep . || find /usr/local/nvidia /usr/lib/x86_64-linux-gnu /usr/lib64 -maxdepth 2 -name 'libGLX_nvidia.so.0' 2>/dev/null | head -n3 | tr '\n' ' ')"
  echo "libnvidia-vulkan-producer: $(ldconfig -p | awk '/libnvidia-vulkan-producer/ {print $NF}' | grep . || find /usr/local/nvidia /usr/lib/x86_64-linux-gnu /usr/lib64 -maxdepth 2 -name 'libnvidia-vulkan-producer*' 2>/dev/null | head -n3 | tr '\n' ' ')"
  echo "## bundle"; cat "$dist/MANIFEST.txt" 2>&1
} >"$out/env.txt" 2>&1
cat "$out/env.txt"

# --- 2. unpack ------------------------------------------------------------------------------------------------
for f in node.xz runtime.tar.xz app.tar.xz MANIFEST.txt; do
  [ -f "$dist/$f" ] || die "$dist/$f is missing: run bench/device/pack.sh on the x86-64 dev machine and carry bench/device/dist"
done
(cd "$dist" && grep -E '  (node\.xz|runtime\.tar\.xz|app\.tar\.xz)  ' MANIFEST.txt | awk '{print $1"  "$2}' | sha256sum -c --quiet) ||
  die "the bundle's files do not match MANIFEST.txt (an incomplete copy?): pack again"
unxz_to() { # file.xz -> stdout, with xz or Python's lzma
  if command -v xz >/dev/null; then xz -dc "$1"; else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$1"; fi
}
unpack() { # dir: unpacks the bundle there unless it already holds this one; then the carried node must start
  if cmp -s "$dist/MANIFEST.txt" "$1/MANIFEST.txt"; then
    note "bundle already unpacked in $1"
  else
    note "unpacking the bundle into $1"
    rm -rf "$1" && mkdir -p "$1/bin" || return 1
    unxz_to "$dist/node.xz" >"$1/bin/node" && chmod +x "$1/bin/node" || return 1
    for t in runtime app; do unxz_to "$dist/$t.tar.xz" | tar -xf - -C "$1" || return 1; done
    cp "$dist/MANIFEST.txt" "$1/"
  fi
  "$1/bin/node" --version >/dev/null
}
# /tmp may be mounted noexec or be small: without DEVICE_WORK, fall back to a folder in the home directory.
if ! unpack "$work"; then
  [ -z "${DEVICE_WORK:-}" ] || die "could not unpack into $work, or the carried node does not start there"
  note "the carried node does not start from $work (noexec?): trying $HOME/mega-asr-device"
  work=$HOME/mega-asr-device
  unpack "$work" || die "could not unpack into $work, or the carried node does not start there"
fi
df -h "$work" | tail -n 1
node=$work/bin/node
export PATH="$work/bin:$PATH"
note "node $("$node" --version), scripts from commit $(cat "$work/app/COMMIT")"

# --- 3. Vulkan and the WebGPU probe -----------------------------------------------------------------------------
# Each carried library (the Vulkan loader, and what NVIDIA's driver links to) only where the machine has none.
rm -rf "$work/vk-used" && mkdir -p "$work/vk-used"
used=
for f in "$work"/vk/*.so.*; do
  [ -e "$f" ] || continue # none carried
  n=$(basename "$f")
  [ -n "$(ldfind "$n")" ] || { ln -s "$f" "$work/vk-used/$n"; used="$used $n"; }
done
if [ -n "$used" ]; then
  export LD_LIBRARY_PATH="$work/vk-used${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  note "carried libraries used, the machine has none:$used ($(cat "$work/vk/SOURCE"))"
fi
note "Vulkan loader: $(ldfind libvulkan.so.1 | head -n1 | grep . || echo "$work/vk/libvulkan.so.1 (carried)")"
case ",${NVIDIA_DRIVER_CAPABILITIES:-}," in
  *,all,* | *,graphics,*) ;;
  *) note "warning: NVIDIA_DRIVER_CAPABILITIES='${NVIDIA_DRIVER_CAPABILITIES:-}' lacks graphics: the container may have no Vulkan driver" ;;
esac
nvidia_icd=
for f in ${VK_DRIVER_FILES:+"$VK_DRIVER_FILES"} "${icd_candidates[@]}"; do [ -f "$f" ] && { nvidia_icd=$f; break; }; done
if [ -n "$nvidia_icd" ]; then
  # The ICD names its driver library; when that is a bare name ldconfig does not know, point the loader at it.
  lib=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["ICD"]["library_path"])' "$nvidia_icd" 2>/dev/null)
  lib_path=$lib
  if [ -n "$lib" ] && [ "${lib#/}" = "$lib" ]; then
    lib_path=$(ldfind "$lib" | head -n1)
    if [ -z "$lib_path" ]; then
      for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu; do
        [ -f "$d/$lib" ] && { export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; lib_path=$d/$lib; note "driver library $lib found in $d"; break; }
      done
    fi
  fi
  note "NVIDIA Vulkan ICD: $nvidia_icd (library $lib${lib_path:+ at $lib_path})"
  # What the driver library cannot find is why the loader would see no driver.
  if [ -n "$lib_path" ] && [ -f "$lib_path" ]; then
    missing=$(ldd "$lib_path" 2>&1 | awk '/not found/ {print $1}' | tr '\n' ' ')
    [ -z "$missing" ] || note "warning: $lib_path cannot find: $missing"
  else
    note "warning: the ICD's library $lib is nowhere to be found"
  fi
else
  note "no nvidia_icd.json in ${icd_candidates[*]}: the loader's own search decides"
fi
probe() { timeout -k 5 60 "$node" "$work/app/probe.mjs" 2>>"$work/probe.err"; }
: >"$work/probe.err"
webgpu=no
if [ -n "$nvidia_icd" ] && VK_DRIVER_FILES=$nvidia_icd VK_ICD_FILENAMES=$nvidia_icd probe; then
  export VK_DRIVER_FILES=$nvidia_icd VK_ICD_FILENAMES=$nvidia_icd
  webgpu=yes
elif probe; then
  webgpu=yes # the loader's default search found a driver
fi
grep -v '^ *at \|^$' "$work/probe.err" | head -n 8
if [ $webgpu = yes ]; then
  record "webgpu probe: OK (VK_DRIVER_FILES=${VK_DRIVER_FILES:-<loader default>})"
else
  record "webgpu probe: NO ADAPTER or failure (see the 'webgpu:' lines above): the WebGPU measurements are skipped"
fi

# --- 4. the stand-in ------------------------------------------------------------------------------------------
# Each stage's limit is also cut to what is left of RUN_LIMIT, keeping CPU_RESERVE seconds for the CPU comparison.
deadline=$((started + ${RUN_LIMIT:-440}))
cpu_reserve=${CPU_RESERVE:-90}
limit() { # wanted reserve -> seconds this stage may take
  local left=$((deadline - SECONDS - $2))
  echo $(($1 < left ? $1 : left))
}
model=$work/standin
if [ -f "$model.done" ] && [ "$(cat "$model.done")" = "$standin_args" ]; then
  note "stand-in already generated ($standin_args)"
else
  rm -rf "$model" "$model.done"
  gen_limit=$(limit "${LIMIT_GEN:-120}" "$cpu_reserve")
  note "generating the stand-in: fixture-model $model $standin_args (limit $gen_limit s)"
  t0=$SECONDS
  # shellcheck disable=SC2086 # the args are words on purpose
  timeout -k 10 "$gen_limit" "$node" "$work/app/fixture-model.mjs" "$model" $standin_args
  rc=$?
  case $rc in
    0) ;;
    124 | 137) die "generating the stand-in ran past its $gen_limit s limit" ;;
    *) die "generating the stand-in failed with exit $rc (its message is above)" ;;
  esac
  echo "$standin_args" >"$model.done"
  record "stand-in: generated in $((SECONDS - t0)) s ($standin_args), $(du -sh "$model" | cut -f1)"
fi

# --- 5. decode steps ---------------------------------------------------------------------------------------------
step() { # provider backend batches wanted-limit reserve: one bench:step process, its report in step-PROVIDER-BATCHES.json
  local t0=$SECONDS rc name="step-$1-${3//,/-}" lim
  lim=$(limit "$4" "$5")
  if [ "$lim" -lt 20 ]; then record "$name: SKIPPED, only $lim s left of RUN_LIMIT"; return 1; fi
  note "bench:step --provider $1 --backend $2 --batch $3 --context $contexts $step_args (limit $lim s)"
  # shellcheck disable=SC2086
  timeout -k 10 "$lim" "$node" "$work/app/step.mjs" --model-dir "$model" --provider "$1" --backend "$2" --batch "$3" \
    --context "$contexts" --clips "$work/app/clips" $step_args --out "$out/$name.json"
  rc=$?
  case $rc in
    0) record "$name: done in $((SECONDS - t0)) s" ;;
    124 | 137) record "$name: STOPPED at its $lim s limit (the rows printed above are what it measured)" ;;
    *) record "$name: FAILED with exit $rc after $((SECONDS - t0)) s (its message is above)" ;;
  esac
  return $rc
}
status=0
if [ $webgpu = yes ]; then
  # The GPU's own view while WebGPU runs (utilisation, memory in use): evidence that the work ran on it.
  sampler=
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -lms 1000 >"$out/gpu-usage.csv" 2>&1 &
    sampler=$!
  fi
  # Separate processes, so that a failure at the widest batch (its prefill is the largest) keeps the others' report.
  for batches in ${WEBGPU_BATCHES:-1,8 32}; do
    step webgpu "${WEBGPU_BACKEND:-both}" "$batches" "${LIMIT_WEBGPU:-150}" "$cpu_reserve" || status=1
  done
  if [ -n "$sampler" ]; then
    kill "$sampler" 2>/dev/null
    wait "$sampler" 2>/dev/null
    record "GPU during the WebGPU steps: peak utilisation $(awk -F', ' 'NR > 1 {u = $2 + 0; if (u > m) m = u} END {print m + 0}' "$out/gpu-usage.csv") %, peak memory $(awk -F', ' 'NR > 1 {v = $3 + 0; if (v > m) m = v} END {print m + 0}' "$out/gpu-usage.csv") MiB (gpu-usage.csv)"
  fi
else
  status=3
fi
step cpu host "${CPU_BATCH:-1}" "${LIMIT_CPU:-90}" 0 || { [ $status = 0 ] && status=1; }

# --- 6. the rows, one line each -----------------------------------------------------------------------------------
# From the reports (a stopped process's report holds the backends it finished). Audio-s/s: the step rate read at the
# clips' answer tokens per audio second, then with each clip's prompt prefilled first (audioNote). Bytes per step:
# the host backend hands the session the whole cache and gets it back (over PCIe on the GPU; nothing crosses on the
# cpu provider), the webgpu backend sends ids and positions and reads back greedy ids; bytesNote says it in full.
reports=()
for f in "$out"/step-webgpu-*.json "$out"/step-cpu-*.json; do [ -f "$f" ] && reports+=("$f"); done
[ ${#reports[@]} -gt 0 ] && rows=$("$node" -e '
  const { readFileSync } = require("node:fs");
  const size = (n) => n < 1024 ? `${n} B` : n < 2 ** 20 ? `${(n / 1024).toFixed(1)} KiB` : n < 2 ** 30 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${(n / 2 ** 30).toFixed(2)} GiB`;
  for (const file of process.argv.slice(1)) {
    let r;
    try {
      r = JSON.parse(readFileSync(file, "utf8"));
    } catch (err) {
      console.log(`${file}: unreadable report (${err.message})`);
      continue;
    }
    const name = file.replace(/^.*\//, "").replace(/\.json$/, "") + (r.complete === false ? " (stopped early)" : "");
    for (const w of r.rows) {
      console.log(`${name}: ${w.backend} backend on ${r.provider}, batch ${w.batch}, context ${w.context}: ${w.stepMs.median} ms/step (p90 ${w.stepMs.p90}), ` +
        `${w.tokensPerSecond} tokens/s, ${w.audioSecondsPerSecond.decode} audio-s/s decoding (${w.audioSecondsPerSecond.withPrefill} with prefill), ` +
        `per step ${size(w.bytesPerStep.toDevice)} to the device and ${size(w.bytesPerStep.toHost)} back`);
    }
  }' "${reports[@]}" 2>&1)
[ -z "${rows:-}" ] || record "rows (audio-s/s: at the packed clips' speech rate, decode steps alone, then with each clip's prefill, the encoder not counted; bytes per step: the host backend hands the session the whole cache and gets it back, over PCIe on a GPU, nothing crosses on cpu; the webgpu backend sends ids and positions and reads greedy ids back):"
while IFS= read -r row; do [ -z "$row" ] || record "  $row"; done <<<"${rows:-}"

note "done in $((SECONDS - started)) s"
printf '%s\n' "${summary[@]}"
exit $status
