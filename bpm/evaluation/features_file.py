"""The features file: the one HDF5 layout that ``bpm test/train --save_features`` and ``bpm extract``
write and ``bpm evaluate`` and ``bpm visualize --features_file`` read.

Why one module: two writers with two layouts meant a file from ``bpm extract`` could not be
evaluated, and the reader lived inside a command. Layout (``format_version`` 2; the
documentation's "Files bpm writes", docs/reference/files.md):

- one group per split, ``<set>/<split>``: ``market1501/query``, ``market1501/gallery``; a plain
  folder of images from ``bpm extract`` is ``<folder name>/images``;
- in each group ``features`` float32 ``[N, D]``, ``names`` and ``paths`` strings ``[N]``, and, when
  the identities are known, ``pids`` and ``camids`` int64 ``[N]``;
- file attributes: ``format_version``, ``created``, ``command`` and what the features came from
  (weights, network, precision, ...), and the L2 normalisation: ``normalized`` (1: the stored
  features are L2-normalised) and ``test_normalize`` (1: the model's own test-time normalisation,
  from its InputSpec, is L2), so ``bpm evaluate`` scores them as ``bpm test`` scored the model.

Older files still read: ``--save_features`` files without ``format_version`` have the same groups;
``bpm extract`` once wrote the datasets at the file root, read as one ``<folder name>/images`` split.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from bpm.data.records import ImageRecord, id_arrays
from bpm.errors import BpmError
from bpm.files import atomic_write

FORMAT_VERSION = 2
"""1 (implicit: no attribute) = the two older layouts; 2 = groups everywhere, ``format_version`` set."""

FOLDER_SPLIT = "images"
"""Split name of a plain folder's images (no query/gallery): ``<folder name>/images``."""

NORMALIZED_ATTR = "normalized"
TEST_NORMALIZE_ATTR = "test_normalize"

_REQUIRED = ("features", "names", "paths")
_IDS = ("pids", "camids")


@dataclass
class FeatureSplit:
    """One group of the file: features row-aligned with image names, paths and (optional) ids."""

    features: np.ndarray
    names: list[str]
    paths: list[str]
    pids: np.ndarray | None = None
    camids: np.ndarray | None = None

    @classmethod
    def from_records(cls, features: np.ndarray, records: Sequence[ImageRecord]) -> "FeatureSplit":
        return cls(features, [Path(r.path).name for r in records], [r.path for r in records], *id_arrays(records))

    @property
    def has_ids(self) -> bool:
        return self.pids is not None and self.camids is not None

    def records(self) -> list[ImageRecord]:
        """The images as evaluation records (needs ``pids`` and ``camids``)."""
        if not self.has_ids:
            raise ValueError("records() needs pids and camids")
        return [ImageRecord(p, int(i), int(c)) for p, i, c in zip(self.paths, self.pids, self.camids)]


@dataclass
class FeaturesFile:
    """A features file as read: every split by its group name, the file attributes, the format version."""

    path: Path
    splits: dict[str, FeatureSplit]
    attrs: dict[str, object] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


@dataclass
class SavedTestSet:
    """A ``<set>/query`` and ``<set>/gallery`` pair: what evaluation and rank lists need."""

    name: str
    query: list[ImageRecord]
    gallery: list[ImageRecord]
    query_names: list[str]
    query_features: np.ndarray
    gallery_features: np.ndarray


# ------------------------------------------------------------------------------------------ writing


def write_features_file(path: str | Path, splits: Mapping[str, FeatureSplit], attrs: Mapping[str, object]) -> Path:
    """Write ``splits`` (group name -> split) to a NEW file at ``path``, atomically, with ``attrs``.

    Why never append: ``bpm evaluate`` reports every test set it finds, so a group left by an
    earlier model would be reported as this model's; a failed write leaves the previous file.
    """
    import h5py

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as handle:
            _write_attrs(handle, attrs)
            for name, split in splits.items():
                _write_split(handle, name, split)

    return atomic_write(path, write, "features file")


def save_features(path: str | Path, features: np.ndarray, records: Sequence[ImageRecord], split: str) -> None:
    """Add (or replace) one split in a features file, creating it if needed.

    A building block for tests and scripts that assemble a file split by split; the commands
    write whole files with :func:`write_features_file`.
    """
    import h5py

    with h5py.File(path, "a") as handle:
        handle.attrs["format_version"] = FORMAT_VERSION
        if split in handle:
            del handle[split]
        _write_split(handle, split, FeatureSplit.from_records(features, records))


def _write_attrs(handle, attrs: Mapping[str, object]) -> None:
    for key, value in attrs.items():
        handle.attrs[key] = "" if value is None else (value if isinstance(value, (int, float)) else str(value))
    handle.attrs["format_version"] = FORMAT_VERSION


def _write_split(handle, name: str, split: FeatureSplit) -> None:
    import h5py

    group = handle.create_group(name)
    group.create_dataset("features", data=np.asarray(split.features, dtype=np.float32))
    group.create_dataset("names", data=np.array(split.names, dtype=h5py.string_dtype()))
    group.create_dataset("paths", data=np.array(split.paths, dtype=h5py.string_dtype()))
    if split.has_ids:
        group.create_dataset("pids", data=np.asarray(split.pids, dtype=np.int64))
        group.create_dataset("camids", data=np.asarray(split.camids, dtype=np.int64))


def normalization_attrs(applied: bool, model_default: bool) -> dict[str, int]:
    """The file attributes recording the L2 normalisation: applied to the stored features, and the model's own."""
    return {NORMALIZED_ATTR: int(bool(applied)), TEST_NORMALIZE_ATTR: int(bool(model_default))}


# ------------------------------------------------------------------------------------------ reading


def evaluation_normalization(path: str | Path, given: bool | None, flag: str = "--normalize_feature") -> bool:
    """Whether to L2-normalise a features file's features before evaluating them.

    Left out (``given`` None): as the model does at test time (``test_normalize``), so
    ``bpm extract`` -> ``bpm evaluate`` gives ``bpm test``'s numbers; stored features that are already
    normalised need nothing more. A given value that differs from the model's test-time
    normalisation (or ``false`` on stored normalised features, which cannot undo it) is used, with a
    one-line warning. Files without the record: ``given``, else off.
    """
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            applied = handle.attrs.get(NORMALIZED_ATTR)
            model = handle.attrs.get(TEST_NORMALIZE_ATTR)
    except OSError:
        return bool(given)  # the reader reports what is wrong with the file, in one line
    applied = None if applied is None else bool(applied)
    model = None if model is None else bool(model)
    if given is None:
        return bool(model) and not applied
    if not given and applied:
        print(f"warning: {flag} false: the features in {path} are stored L2-normalised; false cannot undo it",
              file=sys.stderr)
    elif model is not None and bool(given) != model:
        print(f"warning: {flag} {str(bool(given)).lower()} differs from the model's test-time normalisation "
              f"recorded in {path} ({str(model).lower()}); the metrics will differ from bpm test's", file=sys.stderr)
    return bool(given)


def read_features_file(path: str | Path, flag: str = "--features_file") -> FeaturesFile:
    """Every split of a features file, any version; one-line :class:`BpmError` naming ``flag`` and the file.

    Args:
        path: the HDF5 features file (``bpm test --save_features``, ``bpm extract``).
        flag: the switch named in errors.

    Returns:
        The file's splits and attributes.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise BpmError(f"{flag} {path}: file not found")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise BpmError(f"{flag} {path}: not an HDF5 file ({exc})") from exc
    where = f"{flag} {path}"
    with handle:
        attrs = {key: _attr_value(value) for key, value in handle.attrs.items()}
        version = _format_version(attrs.pop("format_version", 1), where)
        groups: list[str] = []
        handle.visititems(lambda name, node: groups.append(name) if _holds_split(node) else None)
        splits = {name: _read_split(handle[name], where) for name in groups}
        if _holds_split(handle):
            splits[_flat_split_name(path, attrs)] = _read_split(handle, where)  # bpm extract before version 2
    return FeaturesFile(path, splits, attrs, version)


def read_attrs(path: str | Path) -> dict[str, object]:
    """The file-level attributes alone (the weights, net, ... that wrote it), without reading features."""
    import h5py

    with h5py.File(path, "r") as handle:
        return {key: _attr_value(value) for key, value in handle.attrs.items()}


def read_test_sets(path: str | Path, normalize: bool = False, flag: str = "--features_file") -> list[SavedTestSet]:
    """Every ``<set>/query`` + ``<set>/gallery`` pair of a features file, features optionally L2-normalised.

    A file without such a pair (features of a plain folder) is refused in one line saying what it
    holds and what is needed, rather than evaluated as something it is not.

    Args:
        path: the HDF5 features file.
        normalize: L2-normalise the features (as ``bpm test`` does for BNNeck models).
        flag: the switch named in errors.

    Returns:
        One :class:`SavedTestSet` per ``<set>`` group, with records, names and features.
    """
    from bpm.evaluation.features import l2_normalize

    file = read_features_file(path, flag)
    where = f"{flag} {file.path}"
    names = sorted({name.rsplit("/", 1)[0] for name in file.splits if name.endswith("/query")
                    and f"{name.rsplit('/', 1)[0]}/gallery" in file.splits})
    if not names:
        raise BpmError(f"{where}: no query/gallery pair to evaluate; it holds {_describe(file)}; expected "
                       "groups '<set>/query' and '<set>/gallery' with pids and camids (written by "
                       "`bpm test --save_features`, or `bpm extract` of a folder with query/ and gallery/)")
    sets = []
    for name in names:
        query, gallery = file.splits[f"{name}/query"], file.splits[f"{name}/gallery"]
        for side, split in (("query", query), ("gallery", gallery)):
            if not split.has_ids:
                raise BpmError(f"{where}: group /{name}/{side} lacks pids, camids (image names that are not "
                               "Market-style carry no identities to evaluate)")
        q_feat, g_feat = query.features, gallery.features
        if normalize:
            q_feat, g_feat = l2_normalize(q_feat), l2_normalize(g_feat)
        sets.append(SavedTestSet(name, query.records(), gallery.records(), query.names, q_feat, g_feat))
    return sets


def _holds_split(node) -> bool:
    """A group holding any of a split's datasets is a split (a missing one is then reported by name)."""
    import h5py

    return isinstance(node, h5py.Group) and any(isinstance(node.get(k), h5py.Dataset) for k in _REQUIRED + _IDS)


def _describe(file: FeaturesFile) -> str:
    if not file.splits:
        return "no features"
    return ", ".join(f"'{name}' ({len(split.names)} images)" for name, split in file.splits.items())


def _flat_split_name(path: Path, attrs: dict[str, object]) -> str:
    """The split an old flat ``bpm extract`` file becomes: named after its image folder, as version 2 names it."""
    folder = Path(str(attrs.get("images", ""))).name or path.stem
    return f"{folder}/{FOLDER_SPLIT}"


def _format_version(value: object, where: str) -> int:
    try:
        version = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise BpmError(f"{where}: format_version {value!r} is not a number") from None
    if version > FORMAT_VERSION:
        raise BpmError(f"{where}: format_version {version} is newer than this bpm reads ({FORMAT_VERSION}); "
                       "upgrade bpm")
    return version


def _attr_value(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value.item() if isinstance(value, np.generic) else value


def _read_split(group, where: str) -> FeatureSplit:
    label = group.name if group.name != "/" else "the file root"
    missing = [k for k in _REQUIRED if k not in group]
    present_ids = [k for k in _IDS if k in group]
    if len(present_ids) == 1:
        missing.append(next(k for k in _IDS if k not in group))
    if missing:
        raise BpmError(f"{where}: group {label} lacks {', '.join(missing)}")
    prefix = f"{where}: {group.name.rstrip('/')}"
    features = _numeric_dataset(group["features"], f"{prefix}/features", ndim=2)
    names = _string_dataset(group["names"], f"{prefix}/names")
    paths = _string_dataset(group["paths"], f"{prefix}/paths")
    pids = camids = None
    if present_ids:
        pids = _integer_dataset(group["pids"], f"{prefix}/pids")
        camids = _integer_dataset(group["camids"], f"{prefix}/camids")
    lengths = {len(names), len(paths), features.shape[0]} | ({len(pids), len(camids)} if present_ids else set())
    if len(lengths) != 1:
        raise BpmError(f"{where}: group {label} has datasets of different lengths")
    return FeatureSplit(features, names, paths, pids, camids)


def _numeric_dataset(dataset, where: str, ndim: int) -> np.ndarray:
    """A numeric HDF5 dataset of ``ndim`` dimensions as float32, or one line naming it."""
    if dataset.dtype.kind not in "fiu" or dataset.ndim != ndim:
        raise BpmError(f"{where}: expected a {ndim}-D array of numbers, got {dataset.ndim}-D {dataset.dtype}")
    return np.asarray(dataset[()], dtype=np.float32)


def _string_dataset(dataset, where: str) -> list[str]:
    import h5py

    if h5py.check_string_dtype(dataset.dtype) is None or dataset.ndim != 1:
        raise BpmError(f"{where}: expected a 1-D array of strings, got {dataset.ndim}-D {dataset.dtype}")
    return [str(v) for v in dataset.asstr()[()]]


def _integer_dataset(dataset, where: str) -> np.ndarray:
    """Identity or camera numbers: integers; floats only when every value is a whole number (files
    written by MATLAB or pandas store doubles), never truncated silently."""
    if dataset.dtype.kind not in "fiu" or dataset.ndim != 1:
        raise BpmError(f"{where}: expected a 1-D array of integers, got {dataset.ndim}-D {dataset.dtype}")
    values = dataset[()]
    if dataset.dtype.kind == "f":
        if not (np.isfinite(values).all() and (values == np.round(values)).all()):
            raise BpmError(f"{where}: expected whole numbers, got fractional or non-finite values "
                           f"(e.g. {values[~(np.isfinite(values) & (values == np.round(values)))][0]!r})")
    return np.asarray(values, dtype=np.int64)
