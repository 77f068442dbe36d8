# tickstream: `serve` (or any other command) in a container. Multi-stage: the build stage compiles
# the native addons (librdkafka from source, linked against Debian's libs as ops/setup.sh does,
# uWebSockets.js prebuilt) and the TypeScript; the runtime stage carries only what runs.
#   docker build -t tickstream .
#   docker run --rm -p 5555:5555 -p 5001:5001 -e TICKSTREAM_KAFKA_BROKERS=kafka:9092 tickstream
# Not built on the development machine (no Docker engine there); see ops/compose.yaml.

FROM node:20-bookworm AS build
RUN apt-get update \
  && apt-get install -y --no-install-recommends zlib1g-dev libssl-dev libzstd-dev libsasl2-dev \
    libcurl4-openssl-dev liblz4-dev \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# librdkafka links the system libraries above instead of its own static copies.
ENV CKJS_LINKING=dynamic
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY . .
RUN npx tsc -p tsconfig.build.json && npm prune --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
# The shared libraries the librdkafka addon was linked against, at run time.
RUN apt-get update \
  && apt-get install -y --no-install-recommends zlib1g libssl3 libzstd1 libsasl2-2 libcurl4 liblz4-1 \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production \
    TICKSTREAM_INGRESS_HOST=0.0.0.0 \
    TICKSTREAM_HTTP_HOST=0.0.0.0
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/bin ./bin
USER node
# 5555: EA ingress (TCP, TLS optional); 5001: websockets, /metrics, /healthz, /readyz, /status, /.
EXPOSE 5555 5001
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:5001/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "bin/tickstream.js"]
CMD ["serve"]
