"""The speed paths keep results: the reader thread yields the source's frames (gaps where dropped), and the
direct crop embedder gives FeatureExtractor's features bit for bit."""
from __future__ import annotations

import cv2
import numpy as np

from bpm.inference import FeatureExtractor
from bpm.stream.embedding import crop_embedder
from bpm.stream.reader import DirectReader, FrameReader
from bpm.stream.sources import open_source
from stream_helpers import colour_bands_model


def _folder(path, frames: int):
    (path / "img1").mkdir(parents=True)
    for i in range(1, frames + 1):
        cv2.imwrite(str(path / "img1" / f"{i:06d}.png"), np.full((8, 8, 3), i, np.uint8))
    return str(path / "img1")


def _indices(reader, skip_after: int, skip: int) -> list[int]:
    seen = []
    while (frame := reader.next()) is not None:
        assert frame.image[0, 0, 0] == frame.index  # the frame is the file of that number
        seen.append(frame.index)
        if frame.index == skip_after:
            reader.skip_to(frame.index + 1 + skip)
    assert reader.next() is None  # the end stays the end
    reader.close()
    return seen


def test_reader_thread_gives_the_frames_in_order_with_gaps_where_skipped(tmp_path):
    spec = _folder(tmp_path / "cam", 12)
    threaded = _indices(FrameReader(open_source(spec), ahead=2), 4, 3)
    direct = _indices(DirectReader(open_source(spec)), 4, 3)
    assert threaded == direct == [1, 2, 3, 4, 8, 9, 10, 11, 12]


def test_crop_embedder_equals_the_feature_extractor(tmp_path):
    extractor = FeatureExtractor(colour_bands_model(tmp_path / "bands.onnx"), normalize=True, batch_size=4)
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (int(rng.integers(4, 90)), int(rng.integers(2, 40)), 3), dtype=np.uint8)
             for _ in range(9)]
    fast = crop_embedder(extractor)
    assert fast is not extractor
    np.testing.assert_array_equal(fast(crops), extractor(crops))
    assert fast([]).shape == (0, extractor.feature_dim)
