"""Write the embedded default dataset: scikit-learn's handwritten digits as an ImageFolder of PNGs.

    python make_digits.py --output datasets/digits

1,797 8×8 greyscale digits (shipped inside scikit-learn, no download) become
32×32 RGB PNGs in ``train/<digit>/`` and ``val/<digit>/`` (80/20, fixed seed);
see swin_trt/data/digits.py. Rerunning it on a folder that already holds them
does nothing; any other existing folder is refused.
"""
from __future__ import annotations

import argparse
import os

from swin_trt.data.digits import write_digits
from swin_trt.errors import run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="datasets/digits", help="folder to create (train/ and val/ inside)")
    parser.add_argument("--exist-ok", action="store_true", help="do nothing if the folder already exists")
    args = parser.parse_args()
    if args.exist_ok and os.path.isdir(os.path.join(args.output, "val")):
        print(f"{args.output} exists; nothing to do")
        return
    counts = write_digits(args.output)
    if counts["existing"]:
        print(f"{args.output} already holds these {counts['train']} train and {counts['val']} val images; nothing to do")
        return
    print(f"wrote {args.output}: {counts['train']} train and {counts['val']} val images, {counts['classes']} classes")


if __name__ == "__main__":
    run_main(main)
