"""Combine the converted trainval sets of Market-1501, CUHK03 and DukeMTMC-reID.

Same flags as the original baseline's script; the work is done by bpm.data.convert.
Writes <save_dir>/trainval_images/ + partitions.pkl, which `--dataset combined` reads.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from bpm.data.convert import combine_trainval_sets  # noqa: E402
from bpm.errors import exit_code_of  # noqa: E402
from bpm.cli.helpformat import make_parser  # noqa: E402

MEMBERS = (
    ("market1501", "~/Dataset/market1501"),
    ("cuhk03", "~/Dataset/cuhk03/detected"),
    ("duke", "~/Dataset/duke"),
)


def main() -> int:
    parser = make_parser(description="Combine Trainval Set of Market1501, CUHK03, DukeMTMC-reID")
    for name, folder in MEMBERS:
        parser.add_argument(f"--{name}_im_dir", default=f"{folder}/images",
                            help=f"{name} images in the converted layout (written by transform_{name}.py)")
        parser.add_argument(f"--{name}_partition_file", default=None,
                            help=f"{name} partition file (default: partitions.pkl beside --{name}_im_dir ({folder}/partitions.pkl))")
    parser.add_argument("--save_dir", default="~/Dataset/market1501_cuhk03_duke",
                        help="folder to write the combined images/ and partitions.pkl into")
    args = parser.parse_args()
    expand = os.path.expanduser
    im_dirs = [expand(getattr(args, f"{name}_im_dir")) for name, _ in MEMBERS]
    # A partition file left out is the one beside its images, wherever --*_im_dir points.
    partition_files = [expand(getattr(args, f"{name}_partition_file")
                              or os.path.join(os.path.dirname(getattr(args, f"{name}_im_dir").rstrip("/")),
                                              "partitions.pkl"))
                       for name, _ in MEMBERS]

    def work() -> None:
        out = combine_trainval_sets(im_dirs, partition_files, expand(args.save_dir))
        print(f"Partition file saved to {out}")

    return exit_code_of(work)


if __name__ == "__main__":
    sys.exit(main())
