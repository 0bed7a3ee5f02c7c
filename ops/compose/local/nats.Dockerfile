# CI stand-in for nats:2.10-alpine (see README.md beside this file).
ARG BASE_IMAGE=idmesh-local/debian:bookworm
FROM ${BASE_IMAGE}
# wget: the health check of compose.yaml, as busybox has it in the public image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends nats-server wget \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o nobody -g nogroup -m 0750 /data
VOLUME ["/data"]
USER 65534:65534
EXPOSE 4222 8222
CMD ["nats-server", "-js", "-sd", "/data", "-m", "8222"]
