"""script/dataset/*.py: the original's flags, converted output readable by build_dataset."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))

from dataset_fakes import make_market  # noqa: E402

from bpm.data.datasets import build_dataset  # noqa: E402

SCRIPTS = Path(__file__).resolve().parents[2] / "script" / "dataset"


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True)


def test_transform_market1501_from_zip(tmp_path):
    src = make_market(tmp_path / "src")
    save = tmp_path / "market1501"
    save.mkdir()
    archive = save / "Market-1501-v15.09.15.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(src.rglob("*.jpg")):
            z.write(p, p.relative_to(src.parent).as_posix())
    done = _run("transform_market1501.py", "--zip_file", str(archive), "--save_dir", str(save))
    assert done.returncode == 0, done.stderr
    assert (save / "partitions.pkl").is_file() and (save / "images").is_dir()
    ds = build_dataset("market1501", save)
    assert ds.layout.startswith("converted") and ds.num_train_ids == 10
    assert len(ds.test_sets[0].gallery) == 7 and len(ds.test_sets[0].multi_query) == 3


def test_bad_zip_is_a_one_line_error(tmp_path):
    (tmp_path / "DukeMTMC-reID.zip").write_bytes(b"junk")
    done = _run("transform_duke.py", "--zip_file", str(tmp_path / "DukeMTMC-reID.zip"), "--save_dir", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and "DukeMTMC-reID.zip" in done.stderr


def test_cuhk03_and_combine_flags(tmp_path):
    for script, flags in (
        ("transform_cuhk03.py", ["--zip_file", "--train_test_partition_file", "--save_dir"]),
        (
            "combine_trainval_sets.py",
            ["--market1501_im_dir", "--market1501_partition_file", "--cuhk03_im_dir", "--cuhk03_partition_file",
             "--duke_im_dir", "--duke_partition_file", "--save_dir"],
        ),
    ):
        text = _run(script, "--help").stdout
        assert all(flag in text for flag in flags), script


def test_combine_partition_files_default_beside_their_images(tmp_path):
    """A --*_partition_file left out follows its --*_im_dir (not a fixed ~/Dataset path)."""
    args = []
    for name in ("market1501", "cuhk03", "duke"):
        (tmp_path / name / "images").mkdir(parents=True)
        args += [f"--{name}_im_dir", str(tmp_path / name / "images")]
    done = _run("combine_trainval_sets.py", *args, "--save_dir", str(tmp_path / "out"))
    assert done.returncode == 2 and str(tmp_path / "market1501" / "partitions.pkl") in done.stderr, done.stderr
