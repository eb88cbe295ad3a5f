"""``bpm stream``: camera frames -> person detections -> embeddings -> identities across cameras and time."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


from bpm.cli.switches import add_threads_switch
from bpm.errors import BpmError
from bpm.stream.appearance import DEFAULT_TRACK_THRESHOLD
from bpm.stream.gallery import DEFAULT_THRESHOLD


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", action="append", required=True, metavar="S",
                        help="a camera: video file, image-sequence folder, RTSP/HTTP URL or camera index (repeat for more)")
    parser.add_argument("--reid", required=True, metavar="MODEL",
                        help="re-ID model: a bpm checkpoint/weights file or an exported ONNX (FP32, FP16, INT8)")
    found = parser.add_mutually_exclusive_group()
    found.add_argument("--detector", metavar="FILE.onnx", help="person detector (ONNX) to run on every frame")
    found.add_argument("--detections", metavar="DIR",
                       help="read detections instead: DIR/<camera>/det/det.txt or DIR/<camera>.txt (MOTChallenge)")
    parser.add_argument("--detector_family", default="yolox", help="how to read --detector's input and output")
    parser.add_argument("--score", type=float, default=0.3, help="detector score threshold")
    parser.add_argument("--nms", type=float, default=0.45, help="detector NMS IoU threshold")
    parser.add_argument("--out", help="output folder (summary.json, tracks/, identities.*, crops/)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help="cosine distance under which a track joins a known identity")
    parser.add_argument("--gallery", metavar="FILE.npz", help="identities to start from (if the file exists); saved back at the end")
    parser.add_argument("--enroll", metavar="DIR", help="known people: DIR/<name>/*.jpg crops, enrolled under their names")
    parser.add_argument("--realtime", action="store_true", help="play each camera at its frame rate; drop frames when behind")
    parser.add_argument("--save_video", action="store_true", help="write video/<camera>.mp4 with identity boxes")
    parser.add_argument("--no_appearance", action="store_true", help="motion-only baseline: every track is its own identity")
    parser.add_argument("--track_threshold", type=float, default=DEFAULT_TRACK_THRESHOLD,
                        help="cosine distance from its own mean above which a track leaving a crowd is handed back "
                             "(swap) or split")
    parser.add_argument("--no_track_appearance", action="store_true",
                        help="per-camera tracks by motion only (ByteTrack), appearance only for identities")
    parser.add_argument("--min_observations", type=int, default=3, help="embeddings a track gathers before matching")
    parser.add_argument("--embed_every", type=int, default=3, help="then embed each track every n-th frame")
    parser.add_argument("--max_frames", type=int, default=0, help="stop each camera after this many frames (0: all)")
    add_threads_switch(parser)  # per network: the detector and the re-ID model each
    parser.add_argument("--read_ahead", type=int, default=2,
                        help="frames a reader thread per camera decodes ahead, overlapping inference (0: no thread)")
    parser.add_argument("--detector_spin", action="store_true",
                        help="let the detector's ONNX Runtime threads spin between operators (stopping after each frame)")
    parser.add_argument("--eval", metavar="GT", help="score the run against GT/<camera>/gt/gt.txt (global ids) with motmetrics")
    parser.add_argument("--calibrate", metavar="GT", help="only pick --threshold from labelled GT tracks and print it")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def _extractor(args: argparse.Namespace):
    from bpm.inference import FeatureExtractor

    if not Path(args.reid).is_file():
        raise BpmError(f"--reid: {args.reid} is not a file (expected a bpm checkpoint, weights or ONNX file)")
    extractor = FeatureExtractor(args.reid, threads=args.threads, normalize=True, batch_size=32)
    return extractor


def run(args: argparse.Namespace) -> int:
    from bpm.machine import machine_line
    from bpm.stream.detectors import load_detector
    from bpm.stream.embedding import crop_embedder
    from bpm.stream.evaluate import calibrate, evaluate
    from bpm.stream.gallery import Gallery, enroll_folder
    from bpm.files import write_text
    from bpm.stream.motfiles import DetectionFile, find_camera_file
    from bpm.stream.pipeline import Camera, StreamRun, StreamSettings
    from bpm.stream.sources import open_sources
    from bpm.stream.tracking import CameraTracker
    from bpm.stream.video import AnnotatedVideo

    if args.read_ahead < 0:
        raise BpmError(f"--read_ahead: expected 0 or more frames, got {args.read_ahead}")
    for flag in ("min_observations", "embed_every"):
        if getattr(args, flag) < 1:
            raise BpmError(f"--{flag}: expected at least 1, got {getattr(args, flag)}")
    if not 0.0 < args.track_threshold <= 2.0:
        raise BpmError(f"--track_threshold: expected a cosine distance in (0, 2], got {args.track_threshold}")
    if args.calibrate:
        sources = open_sources(args.source)
        result = calibrate(sources, args.calibrate, _extractor(args))
        print(json.dumps(result, indent=1))
        print(f"threshold: use --threshold {result['threshold']} (balanced accuracy {result['balanced_accuracy']:.1%})")
        return 0
    if not args.out:
        raise BpmError("--out: required (the folder for summary.json, tracks and identities)")
    if not args.detector and not args.detections:
        raise BpmError("--detector FILE.onnx or --detections DIR: one is required")
    sources = open_sources(args.source)
    detector = None
    if args.detector:
        detector = load_detector(args.detector, args.detector_family, score_threshold=args.score,
                                 nms_threshold=args.nms, threads=args.threads, spin=args.detector_spin)
    embed = None if args.no_appearance else _extractor(args)
    gallery = Gallery(args.threshold)
    if args.gallery and Path(args.gallery).is_file():
        gallery.load(args.gallery, embed.feature_dim if embed is not None else 0)
    if args.enroll:
        if embed is None:
            raise BpmError("--enroll needs appearance (drop --no_appearance)")
        enroll_folder(gallery, Path(args.enroll), embed)
    out = Path(args.out)
    cameras = []
    for source in sources:
        reader = None
        if args.detections:
            reader = DetectionFile(find_camera_file(args.detections, source.name, "det"), args.score)
        video = AnnotatedVideo(out / "video" / f"{source.name}.mp4", source.fps) if args.save_video else None
        cameras.append(Camera(source, CameraTracker(source.fps), reader, video))
    settings = StreamSettings(threshold=args.threshold, min_observations=args.min_observations,
                              embed_every=args.embed_every, realtime=args.realtime, save_video=args.save_video,
                              appearance=not args.no_appearance, max_frames=args.max_frames,
                              track_appearance=not args.no_track_appearance, track_threshold=args.track_threshold,
                              read_ahead=args.read_ahead)
    info = {"reid": args.reid, "detector": args.detector or f"detections from {args.detections}",
            "machine": machine_line()}
    embedder = None if embed is None else crop_embedder(embed)
    stream = StreamRun(cameras, out, detector, embedder, gallery, settings, info, None if args.quiet else sys.stderr)
    error = None
    try:
        stream.run()
    except BpmError as exc:  # e.g. a detector whose output is not what its family expects: keep what was done
        error = exc
        stream.status = f"failed: {exc}"
        stream.associator.finish()
    summary = stream.write()
    if args.gallery:
        gallery.save(args.gallery)
    for source in sources:
        source.close()
    for item in summary["sources"]:
        if item["ended"].startswith("stream stopped"):
            print(f"warning: --source {item['source']}: {item['ended']}; outputs cover what was read", file=sys.stderr)
        if item["frames_dropped"]:
            print(f"note: --source {item['source']}: dropped {item['frames_dropped']} of "
                  f"{item['frames_read'] + item['frames_dropped']} frames to keep up with its {item['fps']:g} fps", file=sys.stderr)
    if error is not None:
        raise BpmError(f"{error} (outputs so far kept in {out})")
    if args.eval and stream.status == "finished":
        scores = evaluate(out / "tracks", args.eval, [c.source.name for c in cameras])
        write_text(out / "eval.json", json.dumps(scores, indent=1) + "\n", "evaluation scores")
        print(f"eval: IDF1 {scores['idf1']:.3f}  MOTA {scores['mota']:.3f}  cross-camera IDF1 "
              f"{scores['cross_camera_idf1']:.3f}  cross-camera identity accuracy {scores['cross_camera_accuracy']:.3f} "
              f"({scores['cross_camera_pairs']} person-camera pairs)")
    print(f"{summary['frames']} frames from {len(cameras)} camera(s) at {summary['fps']:.1f} fps; "
          f"{summary['identities']} identities -> {out}")
    if stream.status == "interrupted":
        print(f"error: interrupted; outputs so far kept in {out}", file=sys.stderr)
        return 130
    return 0
