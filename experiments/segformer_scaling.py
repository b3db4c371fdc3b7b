"""Study 6: SegFormer's Table 1 questions, scaled down: how much do the MLP decoder's width
C and the encoder's depth buy? MiT-B0 widths, 1 or 2 blocks per stage, C = 32 / 128 / 256,
synthetic_city: mIoU vs parameters vs GFLOPs.

  python experiments/segformer_scaling.py        # --scale=cpu: 4 x 3 runs
  python experiments/segformer_scaling.py --scale=paper --set=data.root=/data/cityscapes \
      --launch=tpu:NAME:ZONE:v4-8 --runs=gs://BUCKET/runs
"""
from segjax.tools import sweep

STUDY = sweep.Study(
    name="segformer_scaling",
    description="SegFormer decoder width C and encoder depth (blocks per stage) on MiT-B0 "
                "widths. The paper (Table 1a/1b) finds C = 256 enough for B0 and accuracy "
                "growing with encoder size; here at CPU scale.",
    scales={"cpu": sweep.Scale("configs/synthetic_city_ablation.py:recipe=cpu"),
            "paper": sweep.Scale("configs/synthetic_city_ablation.py:recipe=cityscapes")},
    settings=[sweep.Setting("C32", choices="width=32"),
              sweep.Setting("C128", choices="width=128"),
              sweep.Setting("C256", choices="width=256"),
              sweep.Setting("C128_depth1", choices="width=128,depth=1")],
    measure=("summary",),
    plots=(("gflops", "mIoU"), ("params", "mIoU")))

if __name__ == "__main__":
  sweep.main(STUDY)
