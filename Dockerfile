# check=skip=FromPlatformFlagConstDisallowed
# mega-asr-server for a CUDA host: docker build -t mega-asr-server .
# No model is baked in: on first start the server downloads it into the Hugging Face cache under /data
# (HF_HOME), a volume, so it is fetched once and kept across restarts. Needs the NVIDIA container toolkit
# and an NVIDIA driver that supports CUDA 13 (driver 580 or newer); the webgpu backend also uses the driver's Vulkan.

# Both stages are linux/amd64 whatever the host: the CUDA provider exists only for linux/x64, and onnxruntime-node's
# install script refuses it on any other architecture. On an arm64 machine (Apple silicon, Graviton) the build
# runs emulated (Docker Desktop does this by itself; elsewhere install QEMU binfmt first). The check directive on
# the first line silences BuildKit's warning about a constant --platform: a single-platform image is the intent.

# ---- build: compile TypeScript, keep production dependencies, fetch the CUDA provider -------------------
FROM --platform=linux/amd64 node:20.20.2-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: onnxruntime-node's install script (the CUDA provider download) runs explicitly below, and
# our own `prepare` (the build) runs once the sources are in.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
# Only linux/x64 binaries go into the image: onnxruntime-node ships every platform's in one package. Of
# @ricky0123/vad-web only the Silero model file is read (src/audio/silero-vad.ts); its browser code and the
# onnxruntime-web it depends on (~290 MB) are never loaded.
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund \
 && rm -rf node_modules/onnxruntime-node/bin/napi-v6/darwin \
           node_modules/onnxruntime-node/bin/napi-v6/win32 \
           node_modules/onnxruntime-node/bin/napi-v6/linux/arm64 \
           node_modules/onnxruntime-web \
 && find node_modules/@ricky0123/vad-web/dist -type f ! -name silero_vad_v6.onnx -delete
# The CUDA execution provider is too big for npm: onnxruntime-node's install script fetches it from NuGet
# (Microsoft.ML.OnnxRuntime.Gpu.Linux, the same version as onnxruntime-node, from api.nuget.org) into the
# binding's folder. "cuda12" is the only manifest name that script knows for linux/x64; it is a name, not the
# CUDA version of what it downloads (see the runtime base below). TensorRT is not in the image, so its
# provider is dropped rather than left to fail.
RUN ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js \
 && rm -f node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_tensorrt.so \
 && ls -l node_modules/onnxruntime-node/bin/napi-v6/linux/x64

# ---- runtime ------------------------------------------------------------------------------------------------
# The base must carry the CUDA and cuDNN majors the NuGet provider links against. onnxruntime-node 1.30.0
# fetches Microsoft.ML.OnnxRuntime.Gpu.Linux 1.30.0; since onnxruntime 1.27 the GPU packages on nuget.org, PyPI
# and npm are the CUDA 13 builds (CUDA 12 ones were deprecated and moved to a separate feed; see
# microsoft/onnxruntime#29032, #28773, #29500), with cuDNN 9. CUDA minor versions are compatible within a major,
# so a recent 13.x runtime serves a provider built with any earlier 13.x. The ldd check further down fails the
# build if this reasoning ever stops holding (e.g. after an onnxruntime-node upgrade), instead of the service
# quietly falling back to the CPU.
FROM --platform=linux/amd64 nvidia/cuda:13.2.1-cudnn-runtime-ubuntu24.04
# ffmpeg decodes every upload format except PCM/float WAV; tini forwards SIGTERM so the server drains.
# The webgpu backend (ASR_BACKEND=webgpu) runs on NVIDIA's Vulkan driver: libvulkan1 is the loader that finds it;
# the driver itself (its ICD json and libGLX_nvidia/libEGL_nvidia) comes from the host, mounted by the NVIDIA
# container toolkit, and needs libxext6 and libegl1 in the image (NVIDIA/nvidia-container-toolkit#16, #1021, #1952).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates ffmpeg tini \
      libvulkan1 libxext6 libegl1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 app \
 && useradd --uid 10001 --gid 10001 --no-log-init --no-create-home --home-dir /app --shell /usr/sbin/nologin app \
 && mkdir /data && chown 10001:10001 /data
COPY --from=build /usr/local/bin/node /usr/local/bin/node
WORKDIR /app
# Code stays owned by root: the service can read it, not change it.
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json openapi.yaml ./
COPY web ./web
# libcuda.so.1 comes from the host driver at run time; every other library the provider needs must be here.
# test -f first: ldd on a missing file says "No such file", not "not found", so without it a provider that was
# never fetched would pass.
RUN cd node_modules/onnxruntime-node/bin/napi-v6/linux/x64 \
 && test -f libonnxruntime_providers_cuda.so \
 && test -f libonnxruntime_providers_shared.so \
 && missing="$(LD_LIBRARY_PATH=. ldd libonnxruntime_providers_cuda.so 2>&1 | grep 'not found' | grep -v 'libcuda\.so\.1' || true)" \
 && if [ -n "$missing" ]; then echo "the CUDA provider cannot load on this base image:" >&2; echo "$missing" >&2; exit 1; fi
# graphics: the toolkit mounts NVIDIA's Vulkan driver only with it (the base image asks for compute,utility alone).
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics
# MALLOC_ARENA_MAX: glibc's per-thread malloc arenas grew RSS ~69 MiB/h under a 30-minute soak; with 2 it stayed
# flat (README, "Soak test"). npm start sets the same.
ENV NODE_ENV=production \
    MALLOC_ARENA_MAX=2 \
    ORT_DISABLE_TELEMETRY=1 \
    HF_HOME=/data \
    ASR_DEVICE=cuda \
    HOST=0.0.0.0 \
    PORT=8000
VOLUME /data
USER 10001:10001
EXPOSE 8000
# /ready turns 200 once the model is on disk and the workers are warm. The first start downloads 2 to 3 GB, so
# failures in the first 30 minutes do not count; with the model already in /data it is ready in about a minute.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30m --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8000)+'/ready').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["node", "dist/server.js"]
