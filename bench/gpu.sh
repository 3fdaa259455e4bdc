#!/usr/bin/env bash
# GPU figures on a CUDA host as our users have one (issue 8, item 7):
#
#   bash bench/gpu.sh OUT_DIR
#
# From a checkout with `npm ci` done WITH onnxruntime-node's CUDA provider (see the README's "CPU and GPU hosts"):
# builds, generates the full-size stand-in, runs bench:step on the cuda provider (batch 1,8,32,64 x context 100,600)
# and bench (the real service, concurrency 1,8,32,64, ASR_DEVICE=cuda, MAX_BATCH=64), and writes to OUT_DIR:
#   env.txt            nvidia-smi, driver, Node, onnxruntime-node, the CUDA provider's libraries, commit
#   run.log            everything printed
#   step-cuda.json     bench:step's report          bench.json, bench.md   bench's report
#   server.log         the service's log during bench
#   summary.txt        one line per stage
# Needs: Linux x86-64, an NVIDIA GPU (Turing or newer) with driver 580+, CUDA 13 runtime libraries (cudart, cuBLAS,
# cuFFT, cuRAND) and cuDNN 9 where the loader finds them (onnxruntime-node 1.30's GPU build is CUDA 13 + cuDNN 9),
# Node 20.19+, and a folder of .wav clips (CLIPS_DIR, default ../shared/fixtures/voices-in-the-wild).
# The stand-in (~2.5 GB) goes to STANDIN_DIR (default ${TMPDIR:-/tmp}/mega-asr-standin) and is reused when it was
# generated with the same STANDIN_ARGS (default "--full-size --stop-after 64").
# Overrides: STEP_BATCH (1,8,32,64), CONCURRENCY (1,8,32,64), BENCH_DURATION (20 s per level),
# LIMIT_GEN / LIMIT_STEP / LIMIT_BENCH (seconds: 150 / 150 / 240), each cut to what is left of RUN_LIMIT (470 s).
# Exit 0 when every stage ran, 1 at the first missing prerequisite or failed stage (the stages after it are skipped;
# summary.txt and run.log say which and why).
set -uo pipefail

out=${1:?usage: bash bench/gpu.sh OUT_DIR}
mkdir -p "$out" && out=$(cd "$out" && pwd)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
: >"$out/summary.txt"
exec > >(tee -a "$out/run.log") 2>&1
tee_pid=$!
# The service's log, also when bench fails: bench prints where it is.
keep_server_log() {
  local log
  log=$(sed -n 's/^bench: starting .*(log \([^)]*\)).*/\1/p' "$out/run.log" | tail -n1)
  if [ -n "$log" ] && [ -f "$log" ]; then cp "$log" "$out/server.log"; fi
}
# At exit: keep the service's log, and let tee write the last lines before the script's end counts as the run's.
trap 'keep_server_log; exec >&- 2>&-; wait "$tee_pid"' EXIT
export ORT_DISABLE_TELEMETRY=1

started=$SECONDS
note() { echo "== $(date -u +%H:%M:%S) [$((SECONDS - started)) s] $*"; }
record() { echo "$1" >>"$out/summary.txt"; note "$1"; }
die() { record "STOP: $*"; exit 1; }

standin=${STANDIN_DIR:-${TMPDIR:-/tmp}/mega-asr-standin}
standin_args=${STANDIN_ARGS:---full-size --stop-after 64}
clips=${CLIPS_DIR:-$root/../shared/fixtures/voices-in-the-wild}
ort_bin=node_modules/onnxruntime-node/bin/napi-v6/linux/x64

# --- prerequisites, each with what to do about it ------------------------------------------------------------
[ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] || die "onnxruntime-node's CUDA provider exists only for Linux x86-64 (this is $(uname -s)-$(uname -m))"
command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 || die "nvidia-smi does not list a GPU: no NVIDIA driver here"
command -v node >/dev/null || die "node is not on PATH (Node 20.19 or newer)"
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' ||
  die "Node $(node --version) is too old: 20.19 or newer"
[ -f "$ort_bin/libonnxruntime.so.1" ] || die "node_modules is not installed: run npm ci"
for lib in libonnxruntime_providers_cuda.so libonnxruntime_providers_shared.so; do
  [ -f "$ort_bin/$lib" ] || die "$ort_bin/$lib is missing: fetch the CUDA provider with
  ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js   (README: CPU and GPU hosts)"
done
missing=$(ldd "$ort_bin/libonnxruntime_providers_cuda.so" | awk '/not found/ {print $1}' | tr '\n' ' ')
[ -z "$missing" ] || die "the CUDA provider cannot load: $missing not found. onnxruntime-node 1.30's provider is built for
  CUDA 13 and cuDNN 9: install the CUDA 13 runtime libraries and cuDNN 9 (or add their folders to LD_LIBRARY_PATH)"
ls "$clips"/*.wav >/dev/null 2>&1 || die "no .wav clips in $clips: set CLIPS_DIR to a folder of speech clips"

{
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -srm), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)$([ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && echo ' (uncommitted changes)')"
  echo "node $(node --version), onnxruntime-node $(node -p "require('./node_modules/onnxruntime-node/package.json').version")"
  echo "## nvidia-smi"; nvidia-smi
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  echo "## CUDA provider libraries"; ldd "$ort_bin/libonnxruntime_providers_cuda.so" | grep -E 'cuda|cublas|cudnn|cufft|curand|nvrtc'
} >"$out/env.txt" 2>&1
cat "$out/env.txt"

# --- stages ------------------------------------------------------------------------------------------------------
# Each stage's limit is cut to what is left of RUN_LIMIT, so the whole script stays under 8 minutes.
deadline=$((started + ${RUN_LIMIT:-470}))
stage() { # name limit command...
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  [ $((deadline - SECONDS)) -lt "$limit" ] && limit=$((deadline - SECONDS))
  [ "$limit" -ge 10 ] || die "$name: only $limit s left of RUN_LIMIT (${RUN_LIMIT:-470} s)"
  note "$name: $* (limit $limit s)"
  timeout -k 10 "$limit" "$@"
  rc=$?
  case $rc in
    0) record "$name: done in $((SECONDS - t0)) s" ;;
    124 | 137) die "$name: stopped at its $limit s limit (what it printed is in run.log)" ;;
    *) die "$name: failed with exit $rc after $((SECONDS - t0)) s" ;;
  esac
}

stage build 120 npm run --silent build
stage "cuda probe" 60 node --import tsx bench/device/probe.ts cuda
if [ -f "$standin.done" ] && [ "$(cat "$standin.done")" = "$standin_args" ]; then
  record "stand-in: reused $standin ($standin_args)"
else
  rm -rf "$standin" "$standin.done"
  # shellcheck disable=SC2086 # the args are words on purpose
  stage stand-in "${LIMIT_GEN:-150}" npm run --silent fixture-model -- "$standin" $standin_args
  echo "$standin_args" >"$standin.done"
fi
stage bench:step "${LIMIT_STEP:-150}" npm run --silent bench:step -- --model-dir "$standin" --provider cuda \
  --batch "${STEP_BATCH:-1,8,32,64}" --context 100,600 --out "$out/step-cuda.json"
stage bench "${LIMIT_BENCH:-240}" npm run --silent bench -- --model-dir "$standin" --concurrency "${CONCURRENCY:-1,8,32,64}" \
  --duration "${BENCH_DURATION:-20}" --clips "$clips" --env ASR_DEVICE=cuda --env MAX_BATCH=64 --out "$out/bench"
note "done in $((SECONDS - started)) s; results in $out"
