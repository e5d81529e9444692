"""gaussmix: Gaussian mixture models fitted by EM.

A drop-in replacement for scikit-learn's ``GaussianMixture``:

>>> from gaussmix import GaussianMixture
>>> from gaussmix.datasets import load_faithful
>>> X = load_faithful().data
>>> gm = GaussianMixture(n_components=2, random_state=42).fit(X)
>>> gm.predict(X).shape
(272,)
"""

from ._anomaly import GaussianMixtureAnomalyDetector
from ._chunks import Chunks
from ._errors import DegenerateDataWarning
from ._history import EMHistory, EMIteration
from ._mixture import GaussianMixture
from ._persistence import load
from ._segmentation import Segmentation, segment_image
from ._selection import GaussianMixtureIC

__version__ = "0.1.0"

__all__ = [
    "Chunks",
    "DegenerateDataWarning",
    "EMHistory",
    "EMIteration",
    "GaussianMixture",
    "GaussianMixtureAnomalyDetector",
    "GaussianMixtureIC",
    "Segmentation",
    "__version__",
    "load",
    "segment_image",
]
