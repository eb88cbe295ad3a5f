"""The package as a user gets it: sdist and wheel built from the checkout, each installed into a fresh
venv, then ``bpm --version`` and a tiny synth -> train -> test run from a folder outside the checkout.

The fresh venvs reuse this venv's torch and other dependencies through a ``.pth`` line naming its
site-packages (a plain path line: the checkout's editable install, itself a ``.pth`` hook there, is
not run), and the package is installed with ``--no-deps``, so nothing is downloaded.
"""
from __future__ import annotations

import subprocess
import sys
import sysconfig
import tarfile
import venv
from pathlib import Path

import pytest

import bpm

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list, cwd: Path, timeout: float = 600) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _build(hook: str, source: Path, out: Path) -> Path:
    """Call setuptools' PEP 517 hook as ``python -m build --no-isolation`` would (no network needed)."""
    out.mkdir(parents=True, exist_ok=True)
    name = _run([sys.executable, "-c", f"from setuptools import build_meta as b; print(b.{hook}({str(out)!r}))"],
                source).strip().splitlines()[-1]
    return out / name


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """The sdist from the checkout, and the wheel built from the unpacked sdist (so a file missing from
    the sdist breaks the wheel too, as with ``python -m build``)."""
    tmp = tmp_path_factory.mktemp("dist")
    sdist = _build("build_sdist", REPO, tmp / "dist")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    source = next((tmp / "unpacked").iterdir())
    wheel = _build("build_wheel", source, tmp / "dist")
    return {"sdist": sdist, "wheel": wheel}


def _fresh_venv(root: Path) -> Path:
    venv.EnvBuilder(with_pip=False).create(root)
    python = root / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root).strip())
    (site / "zz_reuse_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_installed_package_trains_and_tests_outside_the_checkout(kind, dists, tmp_path):
    python = _fresh_venv(tmp_path / "venv")
    # This venv's pip and setuptools (via the .pth line) build the sdist without network or isolation.
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", dists[kind]], tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    bpm_exe = tmp_path / "venv" / "bin" / "bpm"
    assert _run([bpm_exe, "--version"], work).strip() == f"bpm {bpm.__version__}"
    where = _run([python, "-c", "import bpm, pathlib; print(pathlib.Path(bpm.__file__).resolve())"], work)
    assert str(tmp_path / "venv") in where and str(REPO) not in where
    assert (Path(where.strip()).parent / "py.typed").is_file()

    _run([bpm_exe, "synth", "--out", "world", "--num_train_ids", "8", "--num_test_ids", "4", "--num_distractors", "2",
          "--num_junk", "0", "--image_height", "64", "--image_width", "32", "--quiet"], work)
    common = ["--dataset", "market1501", "--data_root", "world", "--exp_dir", "run", "--workers", "0",
              "--rerank", "false", "--log_to_file", "false"]
    _run([bpm_exe, "train", *common, "--resize_h_w", "(64, 32)", "--ids_per_batch", "4", "--ims_per_id", "2",
          "--total_epochs", "1", "--net_pretrained_path", "none", "--steps_per_log", "0"], work)
    out = _run([bpm_exe, "test", *common, "--model_weight_file", "run/ckpt.pth"], work)
    assert "Single Query:" in out and (work / "run" / "results.json").is_file()
