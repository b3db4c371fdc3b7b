"""Study 5: what does test-time inference buy? One trained model (MiT-B0 + SegFormer head,
3 seeds) evaluated under five protocols: whole image, sliding window, whole + flip,
multi-scale (0.5..1.75) + flip, and whole + DeepLab's dense CRF — mIoU against seconds.

  python experiments/inference.py                 # --scale=cpu: 3 runs, 5 x 3 evaluations
  python experiments/inference.py --scale=paper --set=data.root=/data/cityscapes \
      --launch=tpu:NAME:ZONE:v4-8 --runs=gs://BUCKET/runs  # prints launch.sh lines

Each protocol is `python -m segjax.main --mode=evaluate` on a finished run with eval.*
overrides (segjax/tools/sweep.py `evaluations`); its result is kept beside the run as
sweep_eval/<protocol>.json. The sliding window is the scale's eval.crop_size / eval.stride:
the training crop (128x256, stride 2/3 of it) on the 256x512 scenes at --scale=cpu, SegFormer's
1024x1024 windows at stride 768 on Cityscapes. The CRF is DeepLab-CRF-LargeFOV's settings
(configs/common.py), not tuned for these scenes. Seconds are the evaluation's own timer
(50 scenes at --scale=cpu, after compilation), on this machine.
"""
from segjax.tools import sweep

MULTI_SCALE = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
STUDY = sweep.Study(
    name="inference",
    description="Test-time protocols on the same trained MiT-B0 + SegFormer head: whole image, "
                "sliding window (the training crop), horizontal flip, multi-scale "
                "(0.5..1.75) + flip, and DeepLab's dense CRF on the whole-image prediction. "
                "eval_seconds: the evaluation's time on this machine.",
    scales={"cpu": sweep.Scale("configs/synthetic_city_ablation.py:recipe=cpu", {
                "eval.crop_size": (128, 256), "eval.stride": (85, 170)}),
            "paper": sweep.Scale("configs/synthetic_city_ablation.py:recipe=cityscapes")},
    settings=[sweep.Setting("segformer")],
    evaluations=[
        sweep.Setting("whole", {"eval.mode": "whole"}),
        sweep.Setting("slide", {"eval.mode": "slide"}),
        sweep.Setting("flip", {"eval.mode": "whole", "eval.flip": True}),
        sweep.Setting("ms_flip", {"eval.mode": "whole", "eval.scales": MULTI_SCALE,
                                  "eval.flip": True}),
        sweep.Setting("crf", {"eval.mode": "whole", "eval.crf.enabled": True}),
    ],
    classes=("pole", "person", "bicycle"),
    plots=(("eval_seconds", "mIoU"), ("setting", "mIoU")))

if __name__ == "__main__":
  sweep.main(STUDY)
