"""Image segmentation: cluster pixel colours (and optionally positions) with a GMM."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.utils import check_random_state

from ._mixture import GaussianMixture

Array = np.ndarray

__all__ = ["Segmentation", "segment_image"]


@dataclass(frozen=True)
class Segmentation:
    """The result of :func:`segment_image`.

    Attributes
    ----------
    labels : ndarray of shape (height, width)
        The most probable component of each pixel; -1 for fully transparent
        pixels of an RGBA image.
    probabilities : ndarray of shape (height, width, n_components)
        The posterior probability of each component for each pixel (all zero
        for fully transparent pixels).
    image : ndarray
        The input recoloured: every pixel takes its component's mean colour.
        Same shape and dtype as the input (an RGBA image keeps its alpha).
    model : GaussianMixture
        The fitted mixture. Its features are the colour channels scaled to
        [0, 1] (uint images) followed, with ``use_position``, by the row and
        column scaled to [0, ``position_weight``].
    """

    labels: Array
    probabilities: Array
    image: Array
    model: GaussianMixture


def _check_image(image: Any) -> tuple[Array, Array, Array | None, float]:
    """Colours as floats (H x W x C), the input array, alpha and the scale."""
    array = np.asarray(image)
    if array.ndim == 2:
        colours = array[:, :, None]
    elif array.ndim == 3 and array.shape[2] in (1, 3, 4):
        colours = array
    else:
        raise ValueError(
            "image must have shape (height, width) for grey, or (height, width, "
            "C) with C = 1 (grey), 3 (RGB) or 4 (RGBA); got shape "
            f"{array.shape}."
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"image is empty (shape {array.shape}).")
    if array.dtype == np.uint8:
        scale = 255.0
    elif array.dtype == np.uint16:
        scale = 65535.0
    elif array.dtype.kind == "f":
        scale = 1.0
    else:
        raise ValueError(
            f"image dtype {array.dtype} is not supported: pass uint8 or uint16 "
            "pixel values, or floats (typically in [0, 1])."
        )
    floats = colours.astype(np.float64) / scale
    if not np.all(np.isfinite(floats)):
        raise ValueError("image contains NaN or infinite values.")
    alpha = None
    if floats.shape[2] == 4:
        floats, alpha = floats[:, :, :3], floats[:, :, 3]
    return floats, array, alpha, scale


def segment_image(
    image: Any,
    n_components: int,
    *,
    covariance_type: str = "full",
    use_position: bool = False,
    position_weight: float = 1.0,
    max_samples: int | None = 50_000,
    reg_covar: float = 1e-4,
    n_init: int = 1,
    random_state: Any = None,
) -> Segmentation:
    """Segment an image by fitting a Gaussian mixture to its pixels.

    Each pixel is a point in colour space (grey, or RGB), optionally with its
    scaled row and column appended so that segments are also spatially
    coherent. The mixture is fitted on at most ``max_samples`` randomly
    chosen pixels and then assigns every pixel.

    Parameters
    ----------
    image : array-like of shape (height, width) or (height, width, C)
        Grey (C = 1), RGB (C = 3) or RGBA (C = 4) pixels; uint8, uint16
        (scaled to [0, 1]) or float. In an RGBA image the alpha channel is a
        mask: fully transparent pixels (alpha 0) are left out of the fit and
        labelled -1; other pixels are clustered by colour alone.
    n_components : int
        The number of segments.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        Covariance type of the mixture.
    use_position : bool, default=False
        Append each pixel's row and column, scaled so that the longer side of
        the image spans ``position_weight``, to its colour.
    position_weight : float, default=1.0
        How much position counts against colour when ``use_position``
        (colours span at most 1).
    max_samples : int or None, default=50000
        Fit on at most this many random pixels (None: all of them).
    reg_covar : float, default=1e-4
        Added to the covariances' diagonal, in the units of colours scaled to
        [0, 1] (a standard deviation of 0.01, about 2.5 levels of uint8), so
        that the many identical pixels of flat regions do not make a
        component collapse onto one colour.
    n_init : int, default=1
        Initialisations of EM.
    random_state : int, RandomState instance or None, default=None
        Seeds the choice of pixels and the initialisation.

    Returns
    -------
    segmentation : Segmentation
        ``labels`` (height x width), ``probabilities`` (height x width x
        n_components), the recoloured ``image`` and the fitted ``model``.

    Examples
    --------
    >>> import numpy as np
    >>> from gaussmix import segment_image
    >>> rng = np.random.default_rng(0)
    >>> image = np.zeros((20, 30, 3))
    >>> image[:, 15:] = [0.9, 0.2, 0.1]                      # a red right half
    >>> image = np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1)
    >>> result = segment_image(image, 2, random_state=0)
    >>> result.labels.shape, result.probabilities.shape
    ((20, 30), (20, 30, 2))
    >>> left, right = result.labels[:, :15], result.labels[:, 15:]
    >>> len(np.unique(left)), len(np.unique(right)), bool(left[0, 0] != right[0, 0])
    (1, 1, True)
    """
    if isinstance(n_components, bool) or not isinstance(n_components, int | np.integer):
        raise ValueError(f"n_components must be an integer, got {n_components!r}.")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}.")
    if position_weight < 0:
        raise ValueError(f"position_weight must be >= 0, got {position_weight}.")
    colours, original, alpha, scale = _check_image(image)
    height, width, n_channels = colours.shape
    features = colours.reshape(-1, n_channels)
    if use_position:
        rows, cols = np.indices((height, width), dtype=np.float64)
        extent = max(height, width) - 1 or 1
        position = np.column_stack([rows.ravel(), cols.ravel()])
        features = np.hstack([features, position * (position_weight / extent)])
    used = np.ones(height * width, dtype=bool) if alpha is None else alpha.ravel() > 0
    n_used = int(np.count_nonzero(used))
    if n_used < max(int(n_components), 2):
        raise ValueError(
            f"image has {n_used} usable pixels, fewer than n_components="
            f"{n_components} (or 2); pass a larger image or fewer components."
        )
    rng = check_random_state(random_state)
    indices = np.flatnonzero(used)
    if max_samples is not None and n_used > max_samples:
        indices = np.sort(rng.choice(indices, size=max_samples, replace=False))
    model = GaussianMixture(
        int(n_components),
        covariance_type=covariance_type,
        reg_covar=reg_covar,
        n_init=n_init,
        random_state=rng,
    ).fit(features[indices])

    k = model.n_components
    probabilities = np.zeros((height * width, k))
    probabilities[used] = model.predict_proba(features[used])
    labels = np.full(height * width, -1, dtype=np.int64)
    labels[used] = np.argmax(probabilities[used], axis=1)

    palette = np.asarray(model.means_[:, :n_channels], dtype=np.float64)
    recoloured = palette[np.maximum(labels, 0)].reshape(height, width, n_channels)
    if alpha is None:
        out = recoloured
    else:
        out = np.concatenate([recoloured, alpha[:, :, None]], axis=2)
        out[~used.reshape(height, width), :3] = colours[~used.reshape(height, width)]
    if original.dtype.kind == "u":
        converted = np.clip(np.rint(out * scale), 0, scale).astype(original.dtype)
    else:
        converted = out.astype(original.dtype)
    return Segmentation(
        labels=labels.reshape(height, width),
        probabilities=probabilities.reshape(height, width, k),
        image=converted.reshape(original.shape),
        model=model,
    )
