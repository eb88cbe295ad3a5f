"""``bpm synth``: draw the synthetic demo world (:mod:`bpm.data.synthetic`) from the command line.

One flag per :class:`~bpm.data.synthetic.WorldConfig` field; flags left out take defaults that fit
the flags given, so ``--num_cameras 3`` alone never contradicts another flag's default.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Callable, Sequence

from bpm.data.synthetic import WorldConfig, ensure_world, generate_world, world_matches
from bpm.cli.helpformat import make_parser

_HELP = {
    "num_train_ids": "identities in bounding_box_train",
    "num_test_ids": "identities in query/bounding_box_test (disjoint from train)",
    "num_cameras": "cameras c1..cN",
    "min_cameras_per_id": "fewest cameras an identity appears in (>= 2)",
    "max_cameras_per_id": "most cameras an identity appears in",
    "min_images_per_id_camera": "fewest images per identity and camera",
    "max_images_per_id_camera": "most images per identity and camera",
    "queries_per_id_camera": "query images per test identity and camera",
    "multi_query_per_id_camera": "extra gt_bbox images per query (identity, camera)",
    "num_distractors": "0000_ distractor images in the gallery",
    "num_junk": "-1_ junk images in the gallery",
    "image_height": "image height in pixels",
    "image_width": "image width in pixels",
    "nuisance": "strength of camera effects (0 = identical clean cameras)",
    "jpeg_quality": "JPEG quality",
    "seed": "random seed; the same seed and config give byte-identical files",
}


# Flags whose default follows other flags, so that changing one flag alone never makes the
# untouched defaults contradict it (``--num_cameras 3`` must not fail on ``--max_cameras_per_id``'s
# default of 5). In resolution order: name -> (help text of the default, rule on the values so far).
_MAX_IDS = 9999
_D = WorldConfig()
_DEPENDENT_DEFAULTS: dict[str, tuple[str, Callable[[dict], int]]] = {
    "num_test_ids": (f"min({_D.num_test_ids}, {_MAX_IDS} - num_train_ids)",
                     lambda v: min(_D.num_test_ids, _MAX_IDS - v["num_train_ids"])),
    "max_cameras_per_id": (f"min({_D.max_cameras_per_id}, num_cameras), at least min_cameras_per_id",
                           lambda v: max(v["min_cameras_per_id"], min(_D.max_cameras_per_id, v["num_cameras"]))),
    "min_images_per_id_camera": (f"max({_D.min_images_per_id_camera}, queries_per_id_camera + 1)",
                                 lambda v: max(_D.min_images_per_id_camera, v["queries_per_id_camera"] + 1)),
    "max_images_per_id_camera": (f"max({_D.max_images_per_id_camera}, min_images_per_id_camera)",
                                 lambda v: max(_D.max_images_per_id_camera, v["min_images_per_id_camera"])),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bpm synth`` flags: ``--out``, ``--force`` and one flag per WorldConfig field."""
    parser.add_argument("--out", required=True, help="folder to write the world into")
    parser.add_argument("--force", action="store_true", help="redraw even if an identical world is there")
    parser.add_argument("--quiet", action="store_true", help="print nothing (no progress lines, not the folder)")
    for f in dataclasses.fields(WorldConfig):
        if f.name in _DEPENDENT_DEFAULTS:
            parser.add_argument(f"--{f.name}", type=type(f.default), default=None,
                                help=f"{_HELP[f.name]} (default: {_DEPENDENT_DEFAULTS[f.name][0]})")
        else:
            parser.add_argument(f"--{f.name}", type=type(f.default), default=f.default,
                                help=f"{_HELP[f.name]} (default: {f.default})")


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(prog="bpm synth", description="Draw the synthetic Market-1501-style demo world.")
    add_arguments(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> WorldConfig:
    """The world of the parsed flags; flags left out take defaults that fit the flags given."""
    values = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(WorldConfig)}
    for name, (_, rule) in _DEPENDENT_DEFAULTS.items():
        if values[name] is None:
            values[name] = rule(values)
    return WorldConfig(**{k: (getattr(_D, k) if v is None else v) for k, v in values.items()})


def run(args: argparse.Namespace) -> int:
    """Execute parsed ``bpm synth`` arguments (for a CLI that registers :func:`add_arguments`)."""
    config = config_from_args(args)
    if args.force:
        root = generate_world(args.out, config, progress=not args.quiet)
    else:
        reused = world_matches(args.out, config)
        root = ensure_world(args.out, config, progress=not args.quiet)
        if reused and not args.quiet:
            print(f"synth: {root} already holds this world; reused (use --force to redraw)", file=sys.stderr)
    if not args.quiet:
        print(root)  # the world's folder, for scripts; --quiet prints nothing at all
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
