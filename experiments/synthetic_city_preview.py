"""A grid of synthetic_city scenes beside their colour masks, for a human to look at.

  python experiments/synthetic_city_preview.py --out=/tmp/sc_preview.png --num=8

Each row is one image and its mask in the Cityscapes palette; the script also prints the
render time per image, so a change to segjax/data/synthetic_city.py can be judged by eye and
by cost in one run.
"""
import argparse
import time

import numpy as np
from PIL import Image

from segjax.data.synthetic_city import PALETTE, SyntheticCity


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="/tmp/sc_preview.png")
  parser.add_argument("--num", type=int, default=8, help="images (rows)")
  parser.add_argument("--split", default="train")
  parser.add_argument("--start", type=int, default=0, help="first example index")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--size", type=int, nargs=2, default=(256, 512), metavar=("H", "W"))
  args = parser.parse_args()
  source = SyntheticCity(args.split, args.start + args.num, args.size, args.seed)
  rows, seconds = [], []
  for index in range(args.start, args.start + args.num):
    t0 = time.perf_counter()
    image, mask = source.load(index)
    seconds.append(time.perf_counter() - t0)
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    rows.append(np.concatenate([image, gap, PALETTE[mask]], axis=1))
    rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
  Image.fromarray(np.concatenate(rows[:-1], axis=0)).save(args.out)
  print(f"wrote {args.out}: {args.num} images; render {1e3 * np.median(seconds):.1f} ms median, "
        f"{1e3 * max(seconds):.1f} ms max per image")


if __name__ == "__main__":
  main()
