"""Rank-list pictures: geometry, border colours and tile order decoded from the written JPEGs,
checked against a ranking computed here from scratch; query choice; bad input."""
from __future__ import annotations

import re
from itertools import product
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bpm.cli import main
from bpm.data.records import ImageRecord
from bpm.evaluation import re_ranking
from bpm.evaluation.features_file import save_features
from bpm.vis.rank_list import choose_queries, draw_rank_list

GREEN, RED, WHITE = (0, 255, 0), (255, 0, 0), (255, 255, 255)
# Solid colours at least 70 apart in some channel, none close to the border colours or white.
PALETTE = [c for c in product((40, 110, 180), repeat=3) if c not in ((40, 180, 40), (180, 40, 40))]

# (pid, camid) of the gallery: true matches, same-id same-camera entries (to be skipped),
# distractors (pid 0) and junk (pid -1, to be skipped).
GALLERY = [(1, 2), (1, 3), (1, 1), (2, 1), (2, 3), (2, 2), (3, 1), (3, 2), (4, 2), (4, 3),
           (0, 1), (0, 2), (0, 3), (-1, 1), (-1, 2), (5, 1), (5, 3), (6, 2)]
QUERY = [(1, 1), (2, 2), (3, 1), (4, 3), (5, 1), (6, 1), (6, 3)]


def _solid(path: Path, colour: tuple[int, int, int], size=(40, 90)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, quality=95)
    return str(path)


def _toy(tmp: Path, seed: int = 0):
    """Records with one solid colour per image and seeded random features."""
    gallery = [ImageRecord(_solid(tmp / "gallery" / f"{i:03d}_{p}_{c}.jpg", PALETTE[i]), p, c)
               for i, (p, c) in enumerate(GALLERY)]
    query = [ImageRecord(_solid(tmp / "query" / f"q{i:02d}_{p:04d}_c{c}.jpg", PALETTE[-1 - i]), p, c)
             for i, (p, c) in enumerate(QUERY)]
    rng = np.random.default_rng(seed)
    q_feat = rng.normal(size=(len(query), 8)).astype(np.float32)
    g_feat = rng.normal(size=(len(gallery), 8)).astype(np.float32)
    # Spread the norms so that L2 normalisation changes the ranking.
    g_feat *= rng.uniform(0.2, 5.0, size=(len(gallery), 1)).astype(np.float32)
    return query, gallery, q_feat, g_feat


def _features_file(tmp: Path, query, gallery, q_feat, g_feat, name: str = "toy") -> Path:
    path = tmp / "features.h5"
    save_features(path, q_feat, query, f"{name}/query")
    save_features(path, g_feat, gallery, f"{name}/gallery")
    return path


def _expected(dist_row: np.ndarray, q: ImageRecord, gallery: list[ImageRecord], k: int) -> list[int]:
    """The ranking by hand: stable sort on distance, skipping same id + same camera and junk."""
    order = sorted(range(len(gallery)), key=lambda j: (float(dist_row[j]), j))
    keep = [j for j in order if gallery[j].pid != -1 and not (gallery[j].pid == q.pid and gallery[j].camid == q.camid)]
    return keep[:k]


def _euclid(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(((a[:, None, :].astype(np.float64) - b[None, :, :]) ** 2).sum(-1))


def _close(pixel, colour, tol: int) -> bool:
    return all(abs(int(p) - int(c)) <= tol for p, c in zip(pixel, colour))


def _check_picture(path: Path, q: ImageRecord, q_colour, gallery, expected: list[int], k: int) -> None:
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape == (128, (k + 1) * 64 + k * 8, 3)
    # The query tile: its own colour right up to the edge (no border).
    for y, x in ((1, 32), (126, 32), (64, 1), (64, 62), (64, 32)):
        assert _close(pixels[y, x], q_colour, 25), (path.name, "query", y, x, pixels[y, x])
    for slot in range(1, k + 1):
        x0 = slot * 72
        gap = pixels[:, x0 - 8 : x0].reshape(-1, 3)
        assert (gap.min(axis=0) >= 235).all(), (path.name, "gap before slot", slot)
        if slot > len(expected):  # fewer valid gallery entries than tiles: the slot stays white
            assert (pixels[:, x0 : x0 + 64].reshape(-1, 3).min(axis=0) >= 235).all()
            continue
        j = expected[slot - 1]
        border = GREEN if gallery[j].pid == q.pid else RED
        for y, x in ((1, 32), (126, 32), (64, 1), (64, 62)):  # centres of the four border sides
            assert _close(pixels[y, x0 + x], border, 40), (path.name, slot, y, x, pixels[y, x0 + x], border)
        # Just inside the border and in the middle: the right gallery image.
        for y, x in ((64, 32), (10, 10), (117, 53)):
            assert _close(pixels[y, x0 + x], PALETTE[j], 25), (path.name, slot, y, x, pixels[y, x0 + x], PALETTE[j])


def _run(*argv: str) -> int:
    return main(["visualize", "--log_to_file", "false", *argv])


@pytest.mark.parametrize("normalize", [False, True])
def test_pictures_match_independent_ranking(tmp_path, normalize):
    query, gallery, q_feat, g_feat = _toy(tmp_path)
    features = _features_file(tmp_path, query, gallery, q_feat, g_feat)
    k = 6
    assert _run("--features_file", str(features), "--exp_dir", str(tmp_path / "exp"), "--num_queries", "100",
                "--rank_list_size", str(k), "--normalize_feature", str(normalize).lower()) == 0
    if normalize:
        q_feat = q_feat / np.linalg.norm(q_feat, axis=1, keepdims=True)
        g_feat = g_feat / np.linalg.norm(g_feat, axis=1, keepdims=True)
    dist = _euclid(q_feat, g_feat)
    out = tmp_path / "exp" / "rank_lists"
    assert sorted(p.name for p in out.glob("*.jpg")) == sorted(Path(q.path).stem + ".jpg" for q in query)
    for i, q in enumerate(query):
        _check_picture(out / (Path(q.path).stem + ".jpg"), q, PALETTE[-1 - i], gallery,
                       _expected(dist[i], q, gallery, k), k)


def test_normalisation_changes_the_pictures(tmp_path):
    """The original ignored --normalize_feature in the visualiser; here the toy features make it matter."""
    query, gallery, q_feat, g_feat = _toy(tmp_path)
    plain = _euclid(q_feat, g_feat)
    unit = _euclid(q_feat / np.linalg.norm(q_feat, axis=1, keepdims=True),
                   g_feat / np.linalg.norm(g_feat, axis=1, keepdims=True))
    assert any(_expected(plain[i], q, gallery, 6) != _expected(unit[i], q, gallery, 6) for i, q in enumerate(query))
    features = _features_file(tmp_path, query, gallery, q_feat, g_feat)
    for flag in ("false", "true"):
        assert _run("--features_file", str(features), "--exp_dir", str(tmp_path / flag), "--num_queries", "100",
                    "--rank_list_size", "6", "--normalize_feature", flag) == 0
    differing = [q for q in query
                 if (tmp_path / "false/rank_lists" / (Path(q.path).stem + ".jpg")).read_bytes()
                 != (tmp_path / "true/rank_lists" / (Path(q.path).stem + ".jpg")).read_bytes()]
    assert differing


def test_rerank_uses_reranked_distances(tmp_path):
    query, gallery, q_feat, g_feat = _toy(tmp_path, seed=3)
    features = _features_file(tmp_path, query, gallery, q_feat, g_feat)
    k = 5
    assert _run("--features_file", str(features), "--exp_dir", str(tmp_path / "exp"), "--num_queries", "100",
                "--rank_list_size", str(k), "--rerank", "true") == 0
    dist = re_ranking(_euclid(q_feat, g_feat), _euclid(q_feat, q_feat), _euclid(g_feat, g_feat))
    for i, q in enumerate(query):
        _check_picture(tmp_path / "exp/rank_lists" / (Path(q.path).stem + ".jpg"), q, PALETTE[-1 - i], gallery,
                       _expected(dist[i], q, gallery, k), k)


def _sklearn_ap(dist_row, q, gallery) -> tuple[float, int]:
    ranked = _expected(dist_row, q, gallery, len(gallery))
    hits = [n for n, j in enumerate(ranked, start=1) if gallery[j].pid == q.pid]
    if not hits:
        return float("nan"), -1
    return float(np.mean([h / n for h, n in enumerate(hits, start=1)])), hits[0]


def test_index_lists_ap_and_first_match_rank(tmp_path):
    query, gallery, q_feat, g_feat = _toy(tmp_path, seed=5)
    features = _features_file(tmp_path, query, gallery, q_feat, g_feat)
    assert _run("--features_file", str(features), "--exp_dir", str(tmp_path / "exp"), "--num_queries", "100",
                "--rank_list_size", "4") == 0
    page = (tmp_path / "exp/rank_lists/index.html").read_text()
    dist = _euclid(q_feat, g_feat)
    for i, q in enumerate(query):
        name = Path(q.path).name
        line = re.search(rf"<b>{re.escape(name)}</b> &middot; AP ([^&]+) &middot; first match at rank (\w+)", page)
        assert line, name
        ap, first = _sklearn_ap(dist[i], q, gallery)
        if first < 0:
            assert line.group(1).startswith("n/a") and line.group(2) == "none"
        else:
            assert line.group(1) == f"{ap:.2%}" and int(line.group(2)) == first
        assert f'src="{Path(q.path).stem}.jpg"' in page


def test_picture_is_784_by_128_for_top_10(tmp_path):
    paths = [_solid(tmp_path / f"{i}.png", PALETTE[i], size=(30 + i, 70 + 3 * i)) for i in range(11)]
    matches = [i % 3 == 0 for i in range(10)]
    image = draw_rank_list(paths[0], paths[1:], matches, 10)
    assert image.size == (784, 128)
    pixels = np.asarray(image)
    assert (pixels[:, 64:72] == 255).all() and (pixels[:, 776 - 64 : 776 - 56] == 255).all()
    for slot, match in enumerate(matches, start=1):
        x0 = slot * 72
        tile = pixels[:, x0 : x0 + 64]
        colour = GREEN if match else RED
        # Exactly 3 px of border on every side, then the image.
        for ring in (tile[:3].reshape(-1, 3), tile[-3:].reshape(-1, 3), tile[:, :3].reshape(-1, 3),
                     tile[:, -3:].reshape(-1, 3)):
            assert (ring == colour).all()
        assert (tile[3:-3, 3:-3] == PALETTE[slot]).all()
    assert (pixels[:, :64] == PALETTE[0]).all()


def test_query_choice_is_deterministic_and_order_free():
    names = [f"{pid:04d}_c{c}s1_{k:06d}_00.jpg" for pid in range(1, 40) for c in (1, 2) for k in (1, 2)]
    chosen = [names[i] for i in choose_queries(names, 16)]
    shuffled = list(np.random.default_rng(9).permutation(names))
    assert [shuffled[i] for i in choose_queries(shuffled, 16)] == chosen
    assert [names[i] for i in choose_queries(names, 16)] == chosen
    assert chosen == sorted(chosen) and len(set(chosen)) == 16
    assert [names[i] for i in choose_queries(names, 16, seed=2)] != chosen
    assert len(choose_queries(names, 10_000)) == len(names)


def test_two_models_show_the_same_queries(tmp_path):
    query, gallery, q_a, g_a = _toy(tmp_path, seed=1)
    _q, _g, q_b, g_b = _toy(tmp_path, seed=2)
    for tag, (qf, gf) in {"a": (q_a, g_a), "b": (q_b, g_b)}.items():
        path = tmp_path / f"{tag}.h5"
        # Model b's file lists the queries in another order: the choice must not depend on it.
        order = list(range(len(query)))[:: 1 if tag == "a" else -1]
        save_features(path, qf[order], [query[i] for i in order], "toy/query")
        save_features(path, gf, gallery, "toy/gallery")
        assert _run("--features_file", str(path), "--exp_dir", str(tmp_path / tag), "--num_queries", "3",
                    "--rank_list_size", "4") == 0
    names_a = sorted(p.name for p in (tmp_path / "a/rank_lists").glob("*.jpg"))
    names_b = sorted(p.name for p in (tmp_path / "b/rank_lists").glob("*.jpg"))
    assert names_a == names_b and len(names_a) == 3


def test_multiple_test_sets_get_subfolders(tmp_path):
    query, gallery, q_feat, g_feat = _toy(tmp_path)
    path = tmp_path / "f.h5"
    for name in ("market1501", "duke"):
        save_features(path, q_feat, query, f"{name}/query")
        save_features(path, g_feat, gallery, f"{name}/gallery")
    assert _run("--features_file", str(path), "--exp_dir", str(tmp_path / "exp"), "--num_queries", "2",
                "--rank_list_size", "3") == 0
    root = tmp_path / "exp/rank_lists"
    assert len(list((root / "duke").glob("*.jpg"))) == 2 and len(list((root / "market1501").glob("*.jpg"))) == 2
    links = (root / "index.html").read_text()
    assert 'href="duke/index.html"' in links and 'href="market1501/index.html"' in links


# ---- bad input -------------------------------------------------------------------------------

def _error(capsys, *argv: str) -> str:
    assert _run(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_rank_list_size_larger_than_gallery(tmp_path, capsys):
    query, gallery, q_feat, g_feat = _toy(tmp_path)
    features = _features_file(tmp_path, query, gallery, q_feat, g_feat)
    err = _error(capsys, "--features_file", str(features), "--exp_dir", str(tmp_path / "e"),
                 "--rank_list_size", str(len(gallery) + 1))
    assert "--rank_list_size 19 is larger than the gallery of test set toy (18 images)" in err
    assert not (tmp_path / "e").exists()


def test_empty_gallery(tmp_path, capsys):
    query, _gallery, q_feat, _g = _toy(tmp_path)
    features = _features_file(tmp_path, query, [], q_feat, np.zeros((0, 8), np.float32))
    err = _error(capsys, "--features_file", str(features), "--exp_dir", str(tmp_path / "e"))
    assert "test set toy: the gallery is empty" in err


def test_weights_for_another_net(tmp_path, capsys):
    weights = tmp_path / "resnet.pth"
    torch.save({"base.base.conv1.weight": torch.zeros(1)}, weights)  # ResNet-50's first layer, no record
    err = _error(capsys, "-d", "()", "--net", "mobilenetV2", "--model_weight_file", str(weights),
                 "--data_root", str(tmp_path), "--exp_dir", str(tmp_path / "e"))
    assert "holds resnet50 weights, but --net is mobilenet_v2" in err and str(weights) in err


@pytest.mark.parametrize("argv, message", [
    (["--num_queries", "0"], "--num_queries: expected a positive number"),
    (["--rank_list_size", "0"], "--rank_list_size: expected a positive number"),
    (["--features_file", "{tmp}/missing.h5"], "missing.h5: file not found"),
    (["--features_file", "{tmp}/x.h5", "--model_weight_file", "w.pth"], "not both"),
])
def test_flag_errors(tmp_path, capsys, argv, message):
    err = _error(capsys, *[a.format(tmp=tmp_path) for a in argv], "--exp_dir", str(tmp_path / "e"))
    assert message in err


def test_not_a_features_file(tmp_path, capsys):
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    err = _error(capsys, "--features_file", str(tmp_path / "junk.h5"), "--exp_dir", str(tmp_path / "e"))
    assert "not an HDF5 file" in err
