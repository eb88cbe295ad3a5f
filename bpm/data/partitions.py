"""Reading (and writing) the original project's pickles without trusting them.

The original stored its splits as pickles: ``partitions.pkl`` (written by its transform scripts,
often under Python 2.7 with numpy) and the CUHK03 ``re_ranking_train_test_split.pkl``. A pickle
can run any code while loading, and these files are shared around, so they are read with an
unpickler that resolves only numpy's array/scalar/dtype reconstruction functions and plain
containers. Anything else (``os.system``, arbitrary classes) is refused with a one-line error.

Python 2 ``str`` objects are decoded as latin-1 (what numpy needs to rebuild Python 2 arrays);
name lists may come back as numpy ``S`` arrays or lists of ``numpy.bytes_`` and are decoded here.
"""
from __future__ import annotations

import _codecs
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bpm.errors import BpmError


def _numpy_multiarray() -> Any:
    """numpy's ``multiarray`` module, wherever this numpy version keeps it."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray


_MULTIARRAY = _numpy_multiarray()

# Exactly the globals numpy arrays/scalars/dtypes and Python 2/3 containers need, by the
# names old and new pickles use for them. Nothing else can be resolved.
_ALLOWED: dict[tuple[str, str], Any] = {}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = _MULTIARRAY._reconstruct
    _ALLOWED[(_module, "scalar")] = _MULTIARRAY.scalar
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_module, "_frombuffer")] = lambda buf, dtype, shape, order: np.frombuffer(buf, dtype).reshape(
        shape, order=order
    ).copy()
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = np.dtype
_ALLOWED[("_codecs", "encode")] = _codecs.encode
for _module in ("__builtin__", "builtins"):
    for _name, _obj in (("set", set), ("frozenset", frozenset), ("list", list), ("dict", dict), ("tuple", tuple)):
        _ALLOWED[(_module, _name)] = _obj
del _module, _name, _obj


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def load_pickle(path: str | os.PathLike) -> Any:
    """Load a pickle that may only contain numpy arrays/scalars and plain containers."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding="latin1").load()
    except FileNotFoundError as exc:
        raise BpmError(f"{path}: pickle file not found") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise BpmError(f"{path}: not a plain data pickle of the original's format ({exc})") from exc


def to_str_list(value: Any, where: str) -> list[str]:
    """Image names as ``str``, whether stored as a list of str/bytes or a numpy ``S``/``U`` array."""
    if isinstance(value, np.ndarray):
        value = value.ravel().tolist()
    if not isinstance(value, (list, tuple)):
        raise BpmError(f"{where}: expected a list of image names, got {type(value).__name__}")
    out = []
    for item in value:
        if isinstance(item, (bytes, np.bytes_)):
            item = bytes(item).decode("utf-8")
        elif not isinstance(item, str):
            raise BpmError(f"{where}: expected image names, found {item!r}")
        out.append(str(item))
    return out


def to_int_list(value: Any, where: str) -> list[int]:
    """Marks as Python ints, whether stored as a list or a numpy integer array."""
    try:
        return [int(v) for v in (value.ravel().tolist() if isinstance(value, np.ndarray) else value)]
    except (TypeError, ValueError) as exc:
        raise BpmError(f"{where}: expected a list of integers ({exc})") from exc


_NAME_KEYS = ("trainval_im_names", "train_im_names", "val_im_names", "test_im_names")
_MARK_KEYS = ("val_marks", "test_marks")


def load_partitions(path: str | os.PathLike) -> dict[str, Any]:
    """The original's ``partitions.pkl`` with names as ``list[str]`` and marks as ``list[int]``.

    Only ``trainval_im_names`` is required: the combined set's file holds nothing else.
    """
    data = load_pickle(path)
    if not isinstance(data, dict) or "trainval_im_names" not in data:
        raise BpmError(f"{path}: expected a dict with at least 'trainval_im_names' (the original's partitions.pkl)")
    out: dict[str, Any] = {}
    for key in _NAME_KEYS:
        if key in data:
            out[key] = to_str_list(data[key], f"{path}[{key!r}]")
    for key in _MARK_KEYS:
        if key in data:
            out[key] = to_int_list(data[key], f"{path}[{key!r}]")
    for names, marks in (("val_im_names", "val_marks"), ("test_im_names", "test_marks")):
        if (names in out) != (marks in out) or len(out.get(names, [])) != len(out.get(marks, [])):
            raise BpmError(f"{path}: {names!r} and {marks!r} must both be present with equal lengths")
    return out


_SPLIT_KEYS = ("train_im_names", "query_im_names", "gallery_im_names")


def load_train_test_split(path: str | os.PathLike, im_type: str) -> dict[str, list[str]]:
    """One type (``detected``/``labeled``) of CUHK03's ``re_ranking_train_test_split.pkl``."""
    data = load_pickle(path)
    part = data.get(im_type) if isinstance(data, dict) else None
    if not isinstance(part, dict) or any(k not in part for k in _SPLIT_KEYS):
        raise BpmError(f"{path}: expected {{'{im_type}': {{{', '.join(map(repr, _SPLIT_KEYS))}}}}}")
    return {k: to_str_list(part[k], f"{path}[{im_type!r}][{k!r}]") for k in _SPLIT_KEYS}


def save_pickle(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` with protocol 2 (readable by the original under Python 2 and 3), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(obj, f, protocol=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
