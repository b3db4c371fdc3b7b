"""Study 3: which loss for imbalanced classes? CE, class-weighted CE, focal, CE + Dice,
CE + Lovasz, OHEM on MiT-B0 + SegFormer head, synthetic_city (road ~41% of the pixels,
motorcycle ~0.01%): mIoU and the IoU of the rarest classes.

  python experiments/losses.py                   # --scale=cpu: 6 x 3 runs
  python experiments/losses.py --scale=paper --set=data.root=/data/cityscapes \
      --launch=tpu:NAME:ZONE:v4-8 --runs=gs://BUCKET/runs

The losses' options are in configs/synthetic_city_ablation.py (LOSSES).
"""
from segjax.data import synthetic_city
from segjax.tools import sweep

# The columns: every class under 1% of synthetic_city's training pixels, chosen by that rule
# (not by the results), rarest last. A class that no val scene has and no run predicted has no
# IoU and so no column (train, in the 50 cpu-scale val scenes).
RARE_CLASSES = tuple(name for _, name in sorted(
    ((-p, name) for name, p in zip(synthetic_city.CLASS_NAMES,
                                   synthetic_city.CLASS_FREQUENCIES) if p < 0.01)))
STUDY = sweep.Study(
    name="losses",
    description="The decode head's loss on an imbalanced street scene set: does weighting, "
                "focusing, an IoU surrogate or hard-pixel mining lift the rare classes "
                "without costing the frequent ones?",
    scales={"cpu": sweep.Scale("configs/synthetic_city_ablation.py:recipe=cpu"),
            "paper": sweep.Scale("configs/synthetic_city_ablation.py:recipe=cityscapes")},
    settings=[sweep.Setting(l, choices=f"loss={l}")
              for l in ("ce", "wce", "focal", "dice", "lovasz", "ohem")],
    classes=RARE_CLASSES,
    plots=(("setting", "mIoU"), ("setting", "mAcc")))

if __name__ == "__main__":
  sweep.main(STUDY)
