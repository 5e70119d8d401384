# gmrun worker image: `gmrun run-tile --plan URL --tile ID` is what each Kubernetes Job runs.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR

WORKDIR /opt/gmrun
COPY pyproject.toml README.md ./
COPY runner ./runner
COPY algos ./algos

# The same install steps as the README's "Install" section (rasterio's wheel bundles GDAL).
RUN python3 -m pip install --no-cache-dir uv \
 && python3 -m uv pip install --system --no-cache .

RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin gmrun
USER 10001
WORKDIR /home/gmrun
ENTRYPOINT ["gmrun"]
CMD ["--help"]
