"""Study 7: which synchronised augmentations matter? Random rescale range, the
cat_max_ratio crop (re-draw crops where one class covers more than the ratio), and
photometric distortion, each switched off from the default recipe (rescale 0.5-1.5,
cat_max_ratio 0.75, photometric on), MiT-B0 + SegFormer head, synthetic_city.

  python experiments/augmentation.py             # --scale=cpu: 4 x 3 runs
  python experiments/augmentation.py --scale=paper --set=data.root=/data/cityscapes \
      --launch=tpu:NAME:ZONE:v4-8 --runs=gs://BUCKET/runs
"""
from segjax.tools import sweep

STUDY = sweep.Study(
    name="augmentation",
    description="Image and mask move together through every augmentation; each setting "
                "removes one from the default recipe (rescale 0.5-1.5, cat_max_ratio 0.75, "
                "photometric distortion, flip).",
    scales={"cpu": sweep.Scale("configs/synthetic_city_ablation.py:recipe=cpu"),
            "paper": sweep.Scale("configs/synthetic_city_ablation.py:recipe=cityscapes")},
    settings=[sweep.Setting("default"),
              sweep.Setting("no_rescale", {"data.ratio_range": (1.0, 1.0)}),
              sweep.Setting("no_cat_max_ratio", {"data.cat_max_ratio": 1.0}),
              sweep.Setting("no_photometric", {"data.photometric": False})],
    plots=(("setting", "mIoU"),))

if __name__ == "__main__":
  sweep.main(STUDY)
