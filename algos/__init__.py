r"""Per-pixel geometric median and median absolute deviations (MADs) of image stacks.

The numerical core of gmrun: numba kernels that reproduce the geomad/hdstats
``*_pcm`` ("pixel composite mosaic") functions, plus a memory-bounded entry
point for uint16 Sentinel-2 cubes.

The ``*_pcm`` functions take hdstats 0.2.1's positional order
(``nangeomedian_pcm(X, eps, maxiters, num_threads, nodata, nocheck)``,
``emad_pcm(X, gm, num_threads, nocheck, nodata)``; everything else by keyword)
and read integer input as geomad 1.0.0 does: uint16/int16 X is scaled to
``float32(X) * scale + offset`` (defaults 1e-4 and 0) with ``nodata`` (0 / -999)
missing; the geomedian comes back in X's units, the MADs take it in the scaled
ones.  ``nodata`` on float input is honoured, ``scale``/``offset`` on float input
are refused (docs/algos.md has the comparison table).

Geometric median
----------------
For a pixel with valid observations :math:`x_1, \dots, x_n \in \mathbb{R}^p`
(time steps whose bands are all valid) the geomedian is

.. math:: m = \arg\min_y \sum_t \lVert x_t - y \rVert_2 ,

the multivariate median used for Sentinel-2/Landsat composites by Roberts,
Mueller & McIntyre (2017), "High-dimensional pixel composites from earth
observation time series", IEEE TGRS, doi:10.1109/TGRS.2017.2723896.
It is computed with the Weiszfeld iteration

.. math:: T(y) = \frac{\sum_t x_t / d_t}{\sum_t 1/d_t}, \qquad d_t = \lVert x_t - y\rVert,

in the modified form of Vardi & Zhang (2000), "The multivariate L1-median and
associated data depth", PNAS 97:1423, which stays correct when the
iterate lands on observations: with :math:`\eta` the number of observations
equal to :math:`y` and :math:`R = \sum_{x_t \ne y} (x_t - y)/d_t`,

.. math:: y^+ = \max(0, 1 - \eta/\lVert R\rVert)\, T + \min(1, \eta/\lVert R\rVert)\, y .

Iteration stops when :math:`\lVert y^+ - y\rVert < \varepsilon` (default 1e-4
in reflectance units) or after ``maxiters`` steps.  The starting point, the
treatment of coinciding observations (weight 1 inside :math:`T`) and the
stopping rule follow geomad/hdstats exactly, so results agree with them to
float rounding (the step-size criterion leaves an O(eps) error relative to
the exact minimiser, so matching the *trajectory* matters): the first pixel
of each image row starts from the band-wise nan-mean, subsequent pixels from
the origin (this is what geomad's ``reseed`` logic does).

MADs
----
With :math:`m` the float32 geomedian, over the valid observations:

* EMAD  = :math:`\operatorname{median}_t \lVert x_t - m\rVert_2`
* SMAD  = :math:`\operatorname{median}_t \big(1 - \langle x_t, m\rangle / (\lVert x_t\rVert \lVert m\rVert)\big)`
* BCMAD = :math:`\operatorname{median}_t \sum_j |x_{tj} - m_j| / \sum_j |x_{tj} + m_j|`

(Roberts, Dunn & Mueller 2018, "Open data cube products using
high-dimensional statistics of time series", IGARSS 2018,
doi:10.1109/IGARSS.2018.8518312).  Medians use NumPy's convention (mean of
the two middle values for an even count); undefined distances (0/0) are
dropped like ``np.nanmedian`` does.

See ``docs/algos.md`` for implementation notes and benchmarks.
"""

from .api import (
    GeomadResult,
    bcmad_pcm,
    emad_pcm,
    geomedian_mads_u16,
    nangeomedian_pcm,
    numba_threads,
    smad_pcm,
)
from .median import MedianResult, median_u16, nanmedian_pcm

__all__ = [
    "GeomadResult",
    "MedianResult",
    "bcmad_pcm",
    "emad_pcm",
    "geomedian_mads_u16",
    "median_u16",
    "nangeomedian_pcm",
    "nanmedian_pcm",
    "numba_threads",
    "smad_pcm",
]
