"""Doctests of the optional backends run only where their extra is installed."""

import importlib.util

_OPTIONAL = {
    "dask": "src/gaussmix/distributed.py",
    "array_api_compat": "src/gaussmix/_xp.py",
    "matplotlib": "src/gaussmix/plotting.py",
}

collect_ignore = [
    path
    for module, path in _OPTIONAL.items()
    if importlib.util.find_spec(module) is None
]
