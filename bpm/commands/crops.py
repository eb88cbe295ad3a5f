"""``bpm crops``: unlabelled person crops from video, for ``bpm train --distill_extra``.

The rules are :class:`bpm.stream.crops.CropRules` and the work :func:`bpm.stream.crops.harvest_crops`;
this module parses the switches and prints what was written.
"""
from __future__ import annotations

import argparse

from bpm.cli.switches import add_threads_switch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", action="append", required=True, metavar="S",
                        help="a camera: video file, URL, camera index or image folder (repeat for several)")
    parser.add_argument("--detector", required=True, metavar="FILE.onnx", help="person detector (ONNX)")
    parser.add_argument("--detector_family", default="yolox", help="how to read --detector's input and output")
    parser.add_argument("--out", required=True, metavar="DIR", help="crops go to DIR/<camera>/*.jpg")
    parser.add_argument("--every", type=int, default=10, help="detect on every n-th frame (neighbouring frames repeat a crop)")
    parser.add_argument("--min_height", type=int, default=64, help="smallest box height kept, in pixels")
    parser.add_argument("--score", type=float, default=0.5, help="smallest detector score kept")
    parser.add_argument("--min_aspect", type=float, default=1.2, help="smallest height / width of a kept box")
    parser.add_argument("--nms", type=float, default=0.45, help="detector NMS IoU threshold")
    parser.add_argument("--max_frames", type=int, default=0, help="stop each camera after this frame (0: read to the end)")
    add_threads_switch(parser)


def run(args: argparse.Namespace) -> int:
    from bpm.stream.crops import CropRules, harvest_crops
    from bpm.stream.detectors import load_detector
    from bpm.stream.sources import open_sources

    rules = CropRules(every=args.every, min_height=args.min_height, min_score=args.score,
                      min_aspect=args.min_aspect, max_frames=args.max_frames)
    # The detector's own threshold at the rules' score: boxes below it would be dropped anyway.
    detector = load_detector(args.detector, args.detector_family, score_threshold=args.score,
                             nms_threshold=args.nms, threads=args.threads)
    sources = open_sources(args.source)
    try:
        total = sum(harvest_crops(source, detector, args.out, rules, log=print) for source in sources)
    finally:
        for source in sources:
            source.close()
    print(f"{total} crops in {args.out}; train with --distill_extra {args.out}")
    return 0
