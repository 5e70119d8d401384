"""The gather load path (issue #13): decode each input's source window once, then gather.

odc-stac warps every (chunk, band, date) with GDAL. Sentinel-2 granules of one MGRS tile share
one pixel grid across dates (one per resolution across bands), so the choice GDAL's nearest
neighbour warper makes — which source pixel lands in which tile pixel — is the same for every
date and band on that grid. :mod:`.grid_map` makes that choice once per (grid, chunk) by warping
a raster of source pixel *indices* with exactly odc-stac's call; :mod:`.read` decodes the source
window those indices touch; :mod:`.load` gathers and fuses the pixels into the time-contiguous
uint16 (y, x, band, time) sink with the SCL mask of :mod:`runner.worker.mask`.
"""
