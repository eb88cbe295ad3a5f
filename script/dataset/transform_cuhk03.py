"""Convert the CUHK03 release to the original's layout: {detected,labeled}/images/ + partitions.pkl.

Same flags as the original baseline's script; the work is done by bpm.data.convert.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from bpm.data.convert import transform_cuhk03  # noqa: E402
from bpm.errors import exit_code_of  # noqa: E402
from bpm.cli.helpformat import make_parser  # noqa: E402


def main() -> int:
    parser = make_parser(description="Transform CUHK03 Dataset")
    parser.add_argument("--zip_file", default="~/Dataset/cuhk03/cuhk03_release.zip", help="the CUHK03 release zip")
    parser.add_argument("--save_dir", default="~/Dataset/cuhk03",
                        help="folder to write detected/ and labeled/ (images/ + partitions.pkl each) into")
    parser.add_argument("--train_test_partition_file", default=None,
                        help="the new protocol's split (default: re_ranking_train_test_split.pkl beside --zip_file)")
    args = parser.parse_args()
    expand = os.path.expanduser
    if args.train_test_partition_file is None:  # follows --zip_file, wherever that points
        args.train_test_partition_file = os.path.join(os.path.dirname(args.zip_file), "re_ranking_train_test_split.pkl")

    def work() -> None:
        for out in transform_cuhk03(expand(args.zip_file), expand(args.train_test_partition_file),
                                    expand(args.save_dir)):
            print(f"Partition file saved to {out}")

    return exit_code_of(work)


if __name__ == "__main__":
    sys.exit(main())
