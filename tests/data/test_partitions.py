"""The restricted unpickler: the original's Python 2 / Python 3 pickles load, nothing else does."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from dataset_fakes import write_py2_pickle

from bpm.data.partitions import load_partitions, load_pickle, load_train_test_split, save_pickle
from bpm.errors import BpmError

NAMES = ["00000002_0001_00000000.jpg", "00000002_0002_00000000.jpg"]


def test_python2_numpy_string_arrays_and_scalars_decode(tmp_path):
    obj = {
        "trainval_im_names": np.array(NAMES, dtype="S"),
        "train_im_names": [np.bytes_(n.encode()) for n in NAMES],
        "trainval_ids2labels": {2: 0},
        "test_im_names": np.array(NAMES, dtype="S"),
        "test_marks": np.array([0, 1]),
    }
    path = write_py2_pickle(tmp_path / "partitions.pkl", obj)
    assert b"numpy.core.multiarray" in path.read_bytes() and path.read_bytes()[:2] == b"\x80\x02"
    parts = load_partitions(path)
    assert parts["trainval_im_names"] == NAMES and parts["train_im_names"] == NAMES
    assert parts["test_marks"] == [0, 1]
    assert all(type(n) is str for n in parts["test_im_names"])


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_python3_pickles_load(tmp_path, protocol):
    path = tmp_path / "p.pkl"
    split = {"detected": {k: np.array(NAMES) for k in ("train_im_names", "query_im_names", "gallery_im_names")}}
    path.write_bytes(pickle.dumps(split, protocol=protocol))
    assert load_train_test_split(path, "detected")["query_im_names"] == NAMES


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused(tmp_path):
    path = tmp_path / "partitions.pkl"
    path.write_bytes(pickle.dumps({"trainval_im_names": _Exploit()}, protocol=2))
    with pytest.raises(BpmError, match=r"refusing to load global (posix|os)\.system") as err:
        load_pickle(path)
    assert str(path) in str(err.value)


def test_arbitrary_classes_are_refused(tmp_path):
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps({"x": pytest.raises}, protocol=2))
    with pytest.raises(BpmError, match="refusing"):
        load_pickle(path)


def test_shape_errors_name_the_file(tmp_path):
    path = tmp_path / "partitions.pkl"
    save_pickle({"test_im_names": NAMES}, path)
    with pytest.raises(BpmError, match="trainval_im_names"):
        load_partitions(path)
    save_pickle({"trainval_im_names": NAMES, "test_im_names": NAMES, "test_marks": [0]}, path)
    with pytest.raises(BpmError, match="equal lengths"):
        load_partitions(path)
    (tmp_path / "trunc.pkl").write_bytes(path.read_bytes()[:10])
    with pytest.raises(BpmError, match="trunc.pkl"):
        load_pickle(tmp_path / "trunc.pkl")


def test_save_pickle_is_protocol_2(tmp_path):
    save_pickle({"trainval_im_names": NAMES}, tmp_path / "p.pkl")
    assert (tmp_path / "p.pkl").read_bytes()[:2] == b"\x80\x02"
    assert load_partitions(tmp_path / "p.pkl")["trainval_im_names"] == NAMES
