"""The one numba set-up of streamsift's compiled per-event kernels.

``kernel`` is ``numba.njit(cache=True, nogil=True)``: nopython mode, no
fastmath (every kernel gives the bits of its Python source, which tests run
interpreted through ``.py_func``), the GIL released while it runs, and the
machine code cached on disk so that a process compiles a kernel only once per
source version.

numba caches next to the module (``__pycache__``) or, where that is read-only
(an installed wheel in a locked-down image), in the user's cache directory; if
neither is writable it refuses to cache and ``cache=True`` fails at import.
:func:`cache_dir_fallback` then points numba at a directory in the system's
temporary directory, unless ``NUMBA_CACHE_DIR`` already chose one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable

import numba
from numba.misc.appdirs import AppDirs

__all__ = ["cache_dir_fallback", "kernel"]


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def cache_dir_fallback(candidates: Iterable[str], fallback: str) -> str | None:
    """``None`` if one of ``candidates`` (the directories numba would try, in
    order) is writable, else ``fallback`` (created if it can be).

    >>> import os, tempfile
    >>> tmp = tempfile.mkdtemp()
    >>> cache_dir_fallback([os.path.join(tmp, "pycache")], os.path.join(tmp, "alt")) is None
    True
    >>> blocked = os.path.join(tmp, "a-file")
    >>> open(blocked, "w").close()  # a directory cannot be made under a file
    >>> cache_dir_fallback([os.path.join(blocked, "x")], os.path.join(tmp, "alt"))[-3:]
    'alt'
    """
    if any(_writable(path) for path in candidates):
        return None
    _writable(fallback)
    return fallback


if not numba.config.CACHE_DIR:
    _dir = cache_dir_fallback(
        [
            os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__"),
            AppDirs(appname="numba", appauthor=False).user_cache_dir,
        ],
        os.path.join(tempfile.gettempdir(), f"streamsift-numba-{os.getuid()}"),
    )
    if _dir is not None:
        numba.config.CACHE_DIR = _dir

#: decorator of every compiled kernel (see the module docstring)
kernel = numba.njit(cache=True, nogil=True)
