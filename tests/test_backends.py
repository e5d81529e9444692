"""Optional array backends fail helpfully when their extra is missing.

Dispatch recognises an array by the module that defines its type, so these
tests need neither torch nor CuPy: a stand-in type from a module named like
theirs is enough to reach the import of gaussmix's backend module.
"""

from __future__ import annotations

import sys

import pytest

from gaussmix import GaussianMixture


def _array_from(module: str) -> object:
    """An object whose type claims to come from ``module``."""
    return type("ndarray", (), {"__module__": module})()


@pytest.mark.parametrize(
    ("module", "extra"), [("torch", "torch"), ("cupy._core.core", "cupy")]
)
@pytest.mark.parametrize("method", ["fit", "predict"])
def test_missing_array_api_compat_names_the_extra(monkeypatch, module, extra, method):
    monkeypatch.setitem(sys.modules, "array_api_compat", None)
    monkeypatch.delitem(sys.modules, "gaussmix._xp", raising=False)
    model = GaussianMixture(2, random_state=0).fit([[0.0], [1.0], [5.0], [6.0]])
    with pytest.raises(ImportError, match=rf"pip install 'gaussmix\[{extra}\]'"):
        getattr(model, method)(_array_from(module))
