"""bpm stream speed on real footage: per-stage fps, end to end, and cameras sustained with --realtime.

    python bench/stream_speed.py --reid MODEL_int8.onnx [--detector ../shared/detector/yolox_nano_coco.onnx]
                                 [--video ../shared/media/vtest.avi] [--frames 300] [--max_cameras 4]

1. One camera, detector on every frame, as fast as possible: fps and per-stage median/mean ms
   (the baseline measured in the same run is the detector alone: its share of the end-to-end time).
2. ``--realtime`` with N copies of the video as N cameras played at 10 fps: the largest N whose
   frames are dropped by at most 5 % is the number of cameras one machine sustains.
Prints the machine line first. Reads ../shared only here (benchmarks, not tests).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bpm.machine import print_machine

ROOT = Path(__file__).resolve().parents[1]


def run_stream(args: argparse.Namespace, sources: list[str], out: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "bpm", "stream", "--reid", args.reid, "--detector", args.detector, "--out", str(out),
           "--quiet", "--max_frames", str(args.frames), *extra]
    for source in sources:
        cmd += ["--source", source]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reid", required=True)
    parser.add_argument("--detector", default=str(ROOT.parent / "shared/detector/yolox_nano_coco.onnx"))
    parser.add_argument("--video", default=str(ROOT.parent / "shared/media/vtest.avi"))
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--max_cameras", type=int, default=4)
    parser.add_argument("--camera_fps", type=float, default=10.0)
    args = parser.parse_args()
    print_machine()
    with tempfile.TemporaryDirectory() as tmp:
        one = run_stream(args, [args.video], Path(tmp) / "one")
        stages = one["stages"]
        print(f"end to end, 1 camera, detector every frame: {one['fps']:.1f} fps over {one['frames']} frames "
              f"({one['identities']} identities)")
        for name, s in stages.items():
            print(f"  {name:9s} median {s['median_ms']:7.2f} ms  mean {s['mean_ms']:7.2f} ms  ({s['fps']} fps alone)")
        detect_share = stages["detect"]["mean_ms"] / one["latency_ms_per_frame"]
        print(f"  baseline (detector alone) {stages['detect']['fps']} fps; end to end is {detect_share:.0%} detector")
        sustained = 0
        for n in range(1, args.max_cameras + 1):
            # the file is 10 fps; --realtime plays it at its own rate, so each copy is a 10-fps camera
            result = run_stream(args, [args.video] * n, Path(tmp) / f"rt{n}", "--realtime")
            read = sum(s["frames_read"] for s in result["sources"])
            dropped = sum(s["frames_dropped"] for s in result["sources"])
            share = dropped / max(1, read + dropped)
            print(f"realtime, {n} camera(s) at {result['sources'][0]['fps']:g} fps: processed {read}, dropped {dropped} "
                  f"({share:.1%}), {result['fps']:.1f} fps in total")
            if share <= 0.05:
                sustained = n
            else:
                break
        print(f"cameras sustained (<= 5% frames dropped): {sustained}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
