# gmrun worker image: `gmrun run-tile --plan URL --tile ID` is what each Kubernetes Job runs.
#
#   podman build -t REGISTRY/gmrun:VERSION .        (or docker build)
#
# BASE: any Debian-like image with Python >= 3.11 as `python3` and pip (the test suite builds
# this same file on a base made with debootstrap, as no registry is reachable there).
# UV_SYSTEM_CERTS=true: trust the system's certificates (a TLS-intercepting proxy) instead of
# uv's bundled roots.
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG UV_SYSTEM_CERTS=false

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_NO_CACHE=1 \
    NUMBA_CACHE_DIR=/opt/gmrun/numba-cache \
    GMRUN_NUMBA_CACHE_SEED=/opt/gmrun/numba-cache \
    GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR

WORKDIR /opt/gmrun/src
COPY pyproject.toml README.md ./
COPY runner ./runner
COPY algos ./algos

# The same install steps as the README's "Install" section (rasterio's wheel bundles GDAL; no
# wheel cache is kept: PIP_NO_CACHE_DIR, UV_NO_CACHE). The source is removed afterwards: what
# runs (and what numba caches kernels for) is the installed package, its bytecode compiled
# here so that a read-only root needs no .pyc written.
RUN python3 -m pip install uv \
 && python3 -m uv pip install --system --compile-bytecode . \
 && rm -rf /opt/gmrun/src

# Compile every numba kernel a tile uses (the cloud mask's, the geomedian's, the median's) once,
# here, by running the demo on a tiny tile: the same code path and argument types as a Job's.
# A Job runs with a read-only root and NUMBA_CACHE_DIR=/tmp/numba-cache (an emptyDir): the
# worker copies this cache there (GMRUN_NUMBA_CACHE_SEED) before its first kernel call.
# numba keys its cache by CPU model: nodes with another CPU than the build machine's compile
# again (set NUMBA_CPU_NAME=generic at build and run time for a portable cache).
WORKDIR /tmp
RUN for algorithm in geomedian median; do \
      gmrun demo /tmp/warm-up --tile-px 64 --dates 4 --algorithm $algorithm > /tmp/warm-up.log 2>&1 \
        || { cat /tmp/warm-up.log; exit 1; }; \
      rm -rf /tmp/warm-up /tmp/warm-up.log; \
    done \
 && chmod -R a+rX /opt/gmrun/numba-cache

RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin gmrun
USER 10001
WORKDIR /home/gmrun
ENTRYPOINT ["gmrun"]
CMD ["--help"]
