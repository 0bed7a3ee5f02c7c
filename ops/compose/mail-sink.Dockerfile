# The compose stack's mail catcher: an SMTP server on port 1025 that accepts
# every message and prints it to its standard output, so
# `docker compose logs mail` shows what the platform sent. Never a relay.
# Built from Debian's aiosmtpd, on the same base as everything else.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-aiosmtpd \
 && rm -rf /var/lib/apt/lists/*
ENV PYTHONUNBUFFERED=1
USER 65534:65534
EXPOSE 1025
HEALTHCHECK --interval=5s --timeout=3s --retries=12 \
  CMD ["python3", "-c", "import smtplib; smtplib.SMTP('127.0.0.1', 1025, timeout=3).noop()"]
CMD ["python3", "-m", "aiosmtpd", "--nosetuid", "--listen", "0.0.0.0:1025", "--class", "aiosmtpd.handlers.Debugging", "stdout"]
