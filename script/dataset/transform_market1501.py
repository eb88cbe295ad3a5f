"""Convert the Market-1501 release to the original's layout: images/ + partitions.pkl.

Same flags as the original baseline's script; the work is done by bpm.data.convert.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from bpm.data.convert import transform_market1501  # noqa: E402
from bpm.errors import exit_code_of  # noqa: E402
from bpm.cli.helpformat import make_parser  # noqa: E402


def main() -> int:
    parser = make_parser(description="Transform Market1501 Dataset")
    parser.add_argument("--zip_file", default="~/Dataset/market1501/Market-1501-v15.09.15.zip",
                        help="the Market-1501 release zip")
    parser.add_argument("--save_dir", default="~/Dataset/market1501", help="folder to write images/ and partitions.pkl into")
    args = parser.parse_args()

    def work() -> None:
        out = transform_market1501(os.path.expanduser(args.zip_file), os.path.expanduser(args.save_dir))
        print(f"Partition file saved to {out}")

    return exit_code_of(work)


if __name__ == "__main__":
    sys.exit(main())
