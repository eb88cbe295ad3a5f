"""bpm stream speed on real footage: end to end against the detector alone, and cameras sustained with --realtime.

    python bench/stream_speed.py --reid MODEL_int8.onnx [--detector FILE.onnx] [--source VIDEO]
                                 [--frames 150] [--repeats 3] [--max_cameras 4] [-- STREAM FLAGS ...]

The baseline, measured in the same run and interleaved with the cases (the machine's load drifts):
the detector alone on the same frames, decoded beforehand. Each case is repeated ``--repeats``
times; medians (and the spread) are quoted, and every case as a ratio to the baseline's median.

1. One camera, detector on every frame, as fast as possible: fps and per-stage median ms.
2. The same with ``--no_appearance`` (detector + tracker only): what re-ID adds.
   Also the detector alone with ``--detector_spin`` (ONNX Runtime threads spinning between its
   operators): whether that session option pays on this machine (it does not on a loaded one).
3. ``--realtime`` with N copies of the video as N cameras played at their frame rate: the largest
   N whose frames are dropped by at most 5 % is the number of cameras one machine sustains
   (``--max_cameras 0`` skips it; each try lasts frames / fps seconds).

Flags after ``--`` go to every ``bpm stream`` run (e.g. ``-- --detector_spin --read_ahead 0``).
Prints the machine line first. ``--detector`` and ``--video`` default to the shared folder beside
the checkout (``../shared``; from a git worktree, beside the main checkout). Benchmarks may read
it; tests may not.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bpm.machine import print_machine

ROOT = Path(__file__).resolve().parents[1]


def shared_folder() -> Path:
    """``../shared`` beside this checkout, or beside the main checkout when this is a git worktree."""
    beside = ROOT.parent / "shared"
    if beside.is_dir():
        return beside
    try:
        common = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--path-format=absolute", "--git-common-dir"],
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return beside
    return Path(common).parent.parent / "shared"


def detector_alone(detector_path: str, video: str, frames: int, threads: int, spin: bool = False) -> float:
    """Median ms per frame of the detector on ``frames`` frames of ``video`` (decoded first, not timed)."""
    import cv2

    from bpm.stream.detectors import load_detector

    capture = cv2.VideoCapture(video)
    images = []
    while len(images) < frames:
        ok, image = capture.read()
        if not ok:
            break
        images.append(image)
    capture.release()
    if not images:
        sys.exit(f"--video: {video}: OpenCV read no frame")
    detector = load_detector(detector_path, "yolox", threads=threads, spin=spin)
    detector(images[0])  # warm-up: session start and first allocation are not per-frame costs
    times = []
    for image in images:
        start = time.perf_counter()
        detector(image)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def run_stream(args: argparse.Namespace, sources: list[str], out: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "bpm", "stream", "--reid", args.reid, "--detector", args.detector, "--out", str(out),
           "--quiet", "--max_frames", str(args.frames), "--threads", str(args.threads), *args.stream_flags, *extra]
    for source in sources:
        cmd += ["--source", source]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text())


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):7.1f}  (min {min(values):.1f}, max {max(values):.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = shared_folder()
    parser.add_argument("--reid", required=True, metavar="MODEL", help="re-ID model (bpm checkpoint or ONNX)")
    parser.add_argument("--detector", metavar="FILE", default=str(shared / "detector/yolox_nano_coco.onnx"))
    parser.add_argument("--source", "--video", dest="video", metavar="VIDEO", default=str(shared / "media/vtest.avi"))
    parser.add_argument("--frames", type=int, default=150, help="frames per camera and run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime / torch threads (0: default)")
    parser.add_argument("--max_cameras", type=int, default=4, help="realtime cameras to try (0: skip)")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.stream_flags = argv[split + 1:]
    for flag, name in (("reid", "reid"), ("detector", "detector"), ("video", "source")):
        if not Path(getattr(args, flag)).is_file():
            parser.error(f"--{name}: {getattr(args, flag)} is not a file")
    if args.repeats < 1 or args.frames < 2:
        parser.error("--repeats must be at least 1 and --frames at least 2")
    print_machine()
    print(f"video {args.video}, {args.frames} frames per run, {args.repeats} repeats; reid {args.reid}; "
          f"detector {args.detector}", flush=True)
    base_ms, spin_ms, full, plain = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):  # interleaved, so a load change hits every case alike
            base_ms.append(detector_alone(args.detector, args.video, args.frames, args.threads))
            spin_ms.append(detector_alone(args.detector, args.video, args.frames, args.threads, spin=True))
            full.append(run_stream(args, [args.video], Path(tmp) / f"full{repeat}"))
            plain.append(run_stream(args, [args.video], Path(tmp) / f"plain{repeat}", "--no_appearance"))
        base_fps = [1000.0 / ms for ms in base_ms]
        base = statistics.median(base_fps)
        print(f"baseline, detector alone (frames decoded beforehand): fps {spread(base_fps)}")
        spin_fps = [1000.0 / ms for ms in spin_ms]
        print(f"detector alone with --detector_spin: fps {spread(spin_fps)}  = {statistics.median(spin_fps) / base:.2f} x")
        for name, runs in (("end to end, 1 camera (detect + track + re-ID)", full),
                           ("detect + track, no appearance", plain)):
            fps = [r["fps"] for r in runs]
            print(f"{name}: fps {spread(fps)}  = {statistics.median(fps) / base:.2f} x detector alone")
            for stage in runs[0]["stages"]:
                ms = [r["stages"][stage]["median_ms"] for r in runs if stage in r["stages"]]
                print(f"    {stage:9s} median ms per frame {statistics.median(ms):7.2f}")
        print(f"identities found (last end-to-end run): {full[-1]['identities']}")
        sustained = 0
        for n in range(1, args.max_cameras + 1):
            result = run_stream(args, [args.video] * n, Path(tmp) / f"rt{n}", "--realtime")
            read = sum(s["frames_read"] for s in result["sources"])
            dropped = sum(s["frames_dropped"] for s in result["sources"])
            share = dropped / max(1, read + dropped)
            print(f"realtime, {n} camera(s) at {result['sources'][0]['fps']:g} fps: processed {read}, dropped {dropped} "
                  f"({share:.1%}), {result['fps']:.1f} fps in total")
            if share > 0.05:
                break
            sustained = n
        if args.max_cameras:
            print(f"cameras sustained (<= 5% frames dropped, one run each): {sustained}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
