# gmrun worker image: `gmrun run-tile --plan URL --tile ID` is what each Kubernetes Job runs.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/opt/gmrun/numba-cache \
    GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR

WORKDIR /opt/gmrun
COPY pyproject.toml README.md ./
COPY runner ./runner
COPY algos ./algos

# The same install steps as the README's "Install" section (rasterio's wheel bundles GDAL).
RUN python3 -m pip install --no-cache-dir uv \
 && python3 -m uv pip install --system --no-cache .

# Compile the numba kernels (the geomedian's, the cloud mask's) once, at build time, so a container with a writable root filesystem
# does not pay the ~20 s. numba only uses a cache folder it can write to: the Kubernetes Jobs run
# with a read-only root and set NUMBA_CACHE_DIR=/tmp/numba-cache (an emptyDir), so they compile once
# per pod.
RUN python3 -c "import numpy as np, algos; from runner.worker.mask import cleanup; cleanup(np.zeros((1, 8, 8), bool), 2, 5); algos.geomedian_mads_u16(np.ones((2, 2, 10, 3), np.uint16), scale=1e-4, offset=-0.1)" \
 && chmod -R a+rX /opt/gmrun/numba-cache

RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin gmrun
USER 10001
WORKDIR /home/gmrun
ENTRYPOINT ["gmrun"]
CMD ["--help"]
