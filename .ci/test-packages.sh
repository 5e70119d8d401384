#!/usr/bin/env bash
# Install the Debian packages the product tests drive as a user would (tests/test_product.py):
#   chromium  – the run report (report.html) loaded headless: no console errors, every picture
#   gdal-bin  – gdalinfo / gdal_translate of the VRT mosaics (Debian's GDAL, older than rasterio's)
# and the ones the worker image is built and run with (tests/test_image.py):
#   podman, debootstrap (+ uidmap, fuse-overlayfs for podman's storage)
# Usage (CI, `make test`): bash .ci/test-packages.sh   # as root, or with passwordless sudo
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v gdalinfo >/dev/null 2>&1 || need+=(gdal-bin)
command -v podman >/dev/null 2>&1 || need+=(podman uidmap fuse-overlayfs)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ "${#need[@]}" -gt 0 ]; then
  echo "[test-packages] installing apt packages: ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
