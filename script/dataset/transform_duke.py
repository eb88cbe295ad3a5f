"""Convert the DukeMTMC-reID release to the original's layout: images/ + partitions.pkl.

Same flags as the original baseline's script; the work is done by bpm.data.convert.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from bpm.data.convert import transform_duke  # noqa: E402
from bpm.errors import exit_code_of  # noqa: E402
from bpm.cli.helpformat import make_parser  # noqa: E402


def main() -> int:
    parser = make_parser(description="Transform DukeMTMC-reID Dataset")
    parser.add_argument("--zip_file", default="~/Dataset/duke/DukeMTMC-reID.zip", help="the DukeMTMC-reID release zip")
    parser.add_argument("--save_dir", default="~/Dataset/duke", help="folder to write images/ and partitions.pkl into")
    args = parser.parse_args()

    def work() -> None:
        out = transform_duke(os.path.expanduser(args.zip_file), os.path.expanduser(args.save_dir))
        print(f"Partition file saved to {out}")

    return exit_code_of(work)


if __name__ == "__main__":
    sys.exit(main())
