# syntax=docker/dockerfile:1
# The remote-agents operator image: `docker build -t ghcr.io/remote-agents/operator:0.1.0 .`
# Pinned by tag; pin by digest too (FROM python:...@sha256:...) when publishing releases.
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# git: the operator runs `git ls-remote` to follow the branches agents track.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# Numeric uid/gid, the same the Deployment's securityContext asks for (runAsNonRoot can verify it).
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/app --create-home --shell /usr/sbin/nologin app

WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# A regular (not editable) install, then the sources go: the image runs from site-packages only.
RUN pip install ".[otel]" && rm -rf /src

USER 10001:10001
WORKDIR /home/app
EXPOSE 8443 9090
ENTRYPOINT ["remote-agents"]
CMD ["operator"]
