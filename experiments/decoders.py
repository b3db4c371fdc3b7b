"""Study 1: which decoder? FCN, PSP, ASPP (DeepLab v3), DeepLab v3+, UPerNet, Semantic FPN and
the SegFormer MLP head on one MiT-B0 encoder, synthetic_city: mIoU vs GFLOPs vs train img/s.

  python experiments/decoders.py                 # --scale=cpu: 7 x 3 runs
  python experiments/decoders.py --scale=paper --set=data.root=/data/cityscapes \
      --launch=tpu:NAME:ZONE:v4-8 --runs=gs://BUCKET/runs

The single-map heads read the stride-32 map of a non-dilated encoder (see
configs/synthetic_city_ablation.py); with a dilated ResNet they would see stride 8.
GFLOPs (forward, XLA count, at the crop size) and img/s come from segjax.tools.summary and
segjax.tools.benchmark run once per setting.
"""
from segjax.tools import sweep

STUDY = sweep.Study(
    name="decoders",
    description="Seven decode heads (128 channels) on the same MiT-B0 encoder: accuracy "
                "against cost. GFLOPs: XLA's forward count for one 128x256 crop; img/s: the "
                "train step and whole-image inference of segjax.tools.benchmark on this "
                "machine (batch 8).",
    scales={"cpu": sweep.Scale("configs/synthetic_city_ablation.py:recipe=cpu"),
            "paper": sweep.Scale("configs/synthetic_city_ablation.py:recipe=cityscapes")},
    settings=[sweep.Setting(d, choices=f"decoder={d}") for d in (
        "fcn", "psp", "aspp", "deeplabv3plus", "uper", "fpn", "segformer")],
    measure=("summary", "benchmark"),
    classes=("pole", "person", "bicycle"),
    plots=(("gflops", "mIoU"), ("train_images_per_s", "mIoU")))

if __name__ == "__main__":
  sweep.main(STUDY)
