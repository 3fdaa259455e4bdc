# syntax=docker/dockerfile:1
# mega-asr-server for a CUDA host. The model (Reza2kn/mega-asr-onnx, ~2 GB) is mounted at /models, not baked in.
#
# onnxruntime-node 1.30.0 ships its CPU provider in the npm tarball; the CUDA provider (3 shared libraries from
# NuGet Microsoft.ML.OnnxRuntime.Gpu.Linux, exactly 1.30.0) is fetched by its install script in a separate,
# explicit step. Pick the CUDA base image to match what those libraries link against (the build prints it).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM node:20-bookworm-slim AS build
WORKDIR /app
ENV ORT_DISABLE_TELEMETRY=1
COPY package.json package-lock.json ./
RUN ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev \
 && rm -rf node_modules/onnxruntime-node/bin/napi-v6/darwin node_modules/onnxruntime-node/bin/napi-v6/win32 \
           node_modules/onnxruntime-node/bin/napi-v6/linux/arm64
# Needs the network (api.nuget.org); offline builds copy the three .so files into the same folder instead.
RUN node node_modules/onnxruntime-node/script/install.js \
 && ls node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so

FROM ${CUDA_IMAGE}
COPY --from=build /usr/local/bin/node /usr/local/bin/node
# ffmpeg decodes every upload format but PCM/float WAV (see README, Audio input); its libswresample brings libsoxr.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates tini ffmpeg \
 && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 app
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json openapi.yaml ./
# Fail the build when a CUDA/cuDNN library the provider needs is missing (libcuda.so.1 comes from the driver at run time).
RUN ! (ldd node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so \
      | grep 'not found' | grep -v 'libcuda.so.1')
ENV NODE_ENV=production ORT_DISABLE_TELEMETRY=1 MODEL_DIR=/models ASR_DEVICE=cuda HOST=0.0.0.0 PORT=8000 \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER app
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s CMD node -e "fetch('http://127.0.0.1:8000/ready').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# tini forwards SIGTERM so the server can drain.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["node", "dist/server.js"]
