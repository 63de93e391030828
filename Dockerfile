# syntax=docker/dockerfile:1
# Build stage: compile wheels once, so the runtime image carries no compiler.
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY aegis ./aegis
COPY kernel ./kernel
COPY ringbuffer ./ringbuffer
COPY processes ./processes
COPY schema ./schema
RUN python -m venv /opt/aegis \
 && /opt/aegis/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/aegis/bin/pip install --no-cache-dir . \
 && /opt/aegis/bin/python -m aegis.ringbuffer.aot \
 && /opt/aegis/bin/python -m aegis.binance.kline_kernels

# Runtime stage: the virtualenv and a non-root user, nothing else.
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 aegis
COPY --from=build /opt/aegis /opt/aegis
ENV PATH=/opt/aegis/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    AEGIS_HOME=/var/lib/aegis \
    AEGIS_METRICS_PORT=9464
RUN mkdir -p /var/lib/aegis && chown aegis:aegis /var/lib/aegis
USER aegis
WORKDIR /var/lib/aegis
VOLUME ["/var/lib/aegis"]
EXPOSE 9464
# The kernel shuts down gracefully on SIGTERM within AEGIS_SHUTDOWN_DEADLINE_S (default 20 s).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('AEGIS_METRICS_PORT', '9464'), timeout=2).status == 200 else 1)"]
ENTRYPOINT ["aegis-kernel"]
CMD ["run"]
