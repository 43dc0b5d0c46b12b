# syntax=docker/dockerfile:1
# The autoglm-exporter image.
#
#   docker build -t autoglm-exporter .
#   docker run -d --pid=host --network=host --cap-add=SYS_PTRACE \
#     -v /proc:/host/proc:ro -v /sys:/host/sys:ro \
#     -v "$PWD/deploy/compose/exporter.yml:/etc/autoglm-exporter/config.yml:ro" autoglm-exporter
#
# or `docker compose up` (docker-compose.yml explains every privilege it is given).
#
# The image runs as ROOT ON PURPOSE. The exporter watches another program's processes: it reads
# /proc/PID/{fd,environ,maps,exe} of processes owned by other users and takes their Python stacks
# with py-spy (ptrace and process_vm_readv). The kernel allows both only to the owner of the target
# or to a process holding CAP_SYS_PTRACE, and a capability added to the container is only in the
# effective set of root. A non-root user here would silently turn forensics off and hide fds and
# sockets. The host's /proc and /sys are mounted read-only.

# Build stage: a virtual environment with the exporter and its dependencies, no build tools or
# source left in the final image.
FROM python:3.12-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN python -m venv /opt/autoglm-exporter \
    && /opt/autoglm-exporter/bin/pip install --no-cache-dir . \
    && /opt/autoglm-exporter/bin/autoglm-exporter version

# Runtime stage: the same base (the venv's interpreter is its /usr/local/bin/python3.12).
FROM python:3.12-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="autoglm-exporter" \
      org.opencontainers.image.description="Prometheus exporter for an LLM inference service: walks the whole chain and names the first broken link" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/autoglm/autoglm-exporter" \
      org.opencontainers.image.documentation="https://github.com/autoglm/autoglm-exporter#readme" \
      org.opencontainers.image.base.name="docker.io/library/python:3.12-slim"
ENV PATH=/opt/autoglm-exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/autoglm-exporter /opt/autoglm-exporter
# Stack captures go to forensics.directory (this path by default): mount a volume here to keep them.
RUN mkdir -p /var/lib/autoglm-exporter/captures /etc/autoglm-exporter
EXPOSE 9877
# slim has no curl or wget: ask /-/healthy with the image's own Python. This assumes the default
# listen address and plain HTTP; with --web.config.file (TLS, basic auth) or another port, override
# the healthcheck where the container is started.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9877/-/healthy', timeout=4)"]
ENTRYPOINT ["autoglm-exporter"]
CMD ["run", "--config.file=/etc/autoglm-exporter/config.yml"]
