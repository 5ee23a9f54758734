# syntax=docker/dockerfile:1
# The joulemeter daemon, CPU-only install (no PyTorch, no CUDA toolkit). It reads GPUs through NVML, which the
# NVIDIA container toolkit mounts into the container from the host driver at run time: start it with
# `--gpus all` (docker run) or deploy/docker/compose.gpu.yml (compose). See deploy/docker/README.md.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN python -m venv /opt/joulemeter \
 && /opt/joulemeter/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/joulemeter/bin/pip install --no-cache-dir ".[postgres]"

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 joulemeter \
 && useradd --system --uid 10001 --gid joulemeter --home-dir /var/lib/joulemeter --no-create-home joulemeter \
 && install -d -o joulemeter -g joulemeter -m 0750 /var/lib/joulemeter
COPY --from=build /opt/joulemeter /opt/joulemeter
ENV PATH=/opt/joulemeter/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TELEMETRY_HOST=0.0.0.0 \
    TELEMETRY_PORT=8765 \
    TELEMETRY_DB=sqlite:////var/lib/joulemeter/telemetry.db \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=utility
USER joulemeter
VOLUME ["/var/lib/joulemeter"]
EXPOSE 8765
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8765/healthz', timeout=4)"]
# SIGTERM (docker stop) makes the daemon write every sample read so far before it exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["telemetry-service"]
CMD ["serve"]
