# CI stand-in for redis:7.2-bookworm (see README.md beside this file).
ARG BASE_IMAGE=idmesh-local/debian:bookworm
FROM ${BASE_IMAGE}
# uid/gid 999 as in the public image.
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 redis \
 && useradd --system --uid 999 --gid 999 --home-dir /data --shell /usr/sbin/nologin redis \
 && apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o redis -g redis -m 0750 /data
VOLUME ["/data"]
WORKDIR /data
USER 999:999
EXPOSE 6379
CMD ["redis-server"]
