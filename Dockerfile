# syntax=docker/dockerfile:1
# ollama-openai-bridge: Ollama's API on :11434 from an OpenAI-compatible backend.
#   docker build -t ollama-openai-bridge .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/OWNER/ollama-openai-bridge --push .
# Every dependency ships wheels for both platforms, so neither stage compiles anything.
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first, from the runtime lock alone (each at its locked version and hash, the
# versions the tests ran with), so code changes reuse this layer.
COPY requirements/run.lock requirements/build.lock ./requirements/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-compile --require-hashes -r requirements/run.lock \
    && python -m venv /opt/build \
    && /opt/build/bin/pip install --no-compile --require-hashes -r requirements/build.lock
COPY pyproject.toml README.md ./
COPY src ./src
# The wheel is built by the locked hatchling (requirements/build.lock) in a virtualenv of its
# own, without pip's build isolation, which would fetch the build tools unpinned; the runtime
# virtualenv gets the wheel alone.
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation -w /tmp/dist . \
    && /opt/venv/bin/pip install --no-compile --no-deps /tmp/dist/*.whl \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM python:${PYTHON_VERSION}-slim-bookworm
ARG GIT_COMMIT=""
ARG BUILD_DATE=""
LABEL org.opencontainers.image.title="ollama-openai-bridge" \
      org.opencontainers.image.description="Serve Ollama's REST API from any OpenAI-compatible backend" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.created="${BUILD_DATE}"
# jemalloc: MEMORY_ALLOCATOR=auto runs on it, so memory goes back to the system after load.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libjemalloc2 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin proxy
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PROXY_HOST=0.0.0.0 \
    PROXY_PORT=11434 \
    GIT_COMMIT=${GIT_COMMIT} \
    BUILD_DATE=${BUILD_DATE}
# No .env in the image: configuration comes from the environment (docker run -e / --env-file).
WORKDIR /tmp
USER 10001:10001
EXPOSE 11434
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-m", "ollama_openai_bridge.healthcheck"]
ENTRYPOINT ["ollama-openai-bridge"]
