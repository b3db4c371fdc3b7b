"""Study 4: is deep supervision worth it? An auxiliary FCN head on the stride-16 stage of
MiT-B0 (mmseg's deep-supervision head), loss weight 0 / 0.2 / 0.4 (mmseg's) / 1.0, SegFormer
head, synthetic_city.

  python experiments/deep_supervision.py                 # --scale=cpu: 4 x 3 runs
  python experiments/deep_supervision.py --scale=paper --set=data.root=/data/cityscapes \
      --launch=tpu:NAME:ZONE:v4-8 --runs=gs://BUCKET/runs  # prints launch.sh lines

Writes deep_supervision/<scale>/results.{jsonl,md} and plots (segjax/tools/sweep.py).
"""
from segjax.tools import sweep

STUDY = sweep.Study(
    name="deep_supervision",
    description="Auxiliary FCN head (stride 16) on MiT-B0 + SegFormer head: does its loss "
                "weight change the main head's mIoU? The auxiliary head is dropped at test "
                "time, so its cost is training only. Small objects and thin classes are "
                "where deeper gradients might matter, so their IoU is listed.",
    scales={"cpu": sweep.Scale("configs/synthetic_city_ablation.py:recipe=cpu"),
            "paper": sweep.Scale("configs/synthetic_city_ablation.py:recipe=cityscapes")},
    settings=[sweep.Setting(f"aux{w:g}", choices=f"aux={w:g}") for w in (0.0, 0.2, 0.4, 1.0)],
    classes=("pole", "person", "bicycle"),
    plots=(("setting", "mIoU"),))

if __name__ == "__main__":
  sweep.main(STUDY)
