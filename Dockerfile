# The `workpools` command: `serve` by default; `db upgrade`, `pool ls`, … as arguments.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . .
RUN pip install . \
    && useradd --system --no-create-home --uid 10001 workpools

# The HTTP port (metrics, probes, status page) listens on every interface of the container: it is
# reachable only where the port is published. WORKPOOLS_HTTP_TOKEN protects page and metrics.
ENV WORKPOOLS_HTTP_HOST=0.0.0.0 \
    WORKPOOLS_HTTP_PORT=8380
EXPOSE 8380
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"WORKPOOLS_HTTP_PORT\", \"8380\")}/readyz', timeout=4)"

USER workpools
ENTRYPOINT ["workpools"]
CMD ["serve"]
