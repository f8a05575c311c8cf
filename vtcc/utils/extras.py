"""Optional extras (umap-learn, faiss, pyarrow): installed means *importable*. A folder left behind
by an uninstall, or a package whose own imports fail, is reported once and treated as missing, so
a run falls back (t-SNE for the map, the exact neighbour search) or stops with the ``pip install``
that mends it, instead of failing later on a module without its contents."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
from types import ModuleType

log = logging.getLogger("vtcc")
_find_spec = importlib.util.find_spec  # the tests' "nothing installed" replaces this one


@functools.cache
def optional_module(name: str, install: str) -> ModuleType | None:
    """The module ``name`` when it is a package that imports, else None, said once with
    ``install``, the command that mends it."""
    spec = _find_spec(name)
    if spec is None:
        return None
    if spec.origin is None:  # a folder without __init__.py: what an uninstall can leave behind
        where = ", ".join(spec.submodule_search_locations or [])
        log.warning(
            "%s at %s is a folder with no package in it: treated as missing; %s", name, where, install
        )
        return None
    try:
        return importlib.import_module(name)
    except Exception as error:  # a broken install raises what its own imports raise, not only ImportError
        log.warning("%s is installed but does not import (%s): treated as missing; %s", name, error, install)
        return None
