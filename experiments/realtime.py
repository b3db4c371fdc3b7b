"""Study 8: the real-time Pareto front — every real-time model trained on the same bed,
mIoU against inference images/s at 512x1024 on this machine.

  python experiments/realtime.py                  # --scale=cpu: 14 x 3 runs (~4 h here)
  python experiments/realtime.py --only=fast_scnn,stdc1 --seeds=3
  python experiments/realtime.py --scale=paper --set=data.root=/data/cityscapes \
      --launch=tpu:NAME:ZONE:v4-8 --runs=gs://BUCKET/runs  # prints launch.sh lines

Each setting is `model=<config>` on configs/synthetic_city_ablation.py: that config's whole
model (auxiliary, detail and boundary heads and their losses included) trained with the
bed's recipe, the same AdamW schedule for every model rather than each paper's own, from
scratch (DDRNet and PIDNet's ImageNet starts are not loaded). Speed: segjax.tools.benchmark
--notrain, whole 512x1024 frames, batch 1, one process on this machine (the issue's size; the
README's 1024x2048 table is experiments/perf/realtime_speed.py); GFLOPs: segjax.tools.summary
at 512x1024. ICNet is its R50 variant, the paper's.
"""
from segjax.tools import sweep

MODELS = ("enet_city", "espnet_city", "icnet_r50_d8_city", "bisenetv1_r18_d32_city",
          "bisenetv2_fcn_city", "fast_scnn_city", "stdc1_city", "stdc2_city",
          "ddrnet_23_slim_city", "ddrnet_23_city", "pidnet_s_city", "erfnet_fcn_city",
          "cgnet_city", "espnet_c_city")
SIZE = "--config.data.crop_size=(512, 1024)"
STUDY = sweep.Study(
    name="realtime",
    description="The real-time models on one training recipe: accuracy against inference "
                "speed (whole 512x1024 frames, batch 1, images/s on this machine) and "
                "forward GFLOPs at 512x1024.",
    scales={"cpu": sweep.Scale("configs/synthetic_city_ablation.py:recipe=cpu"),
            "paper": sweep.Scale("configs/synthetic_city_ablation.py:recipe=cityscapes")},
    settings=[sweep.Setting(m[:-len("_city")], choices=f"model={m}") for m in MODELS],
    measure=("summary", "benchmark"),
    measure_flags={"summary": ("--size=512,1024",),
                   "benchmark": ("--notrain", "--batch_size=1", "--config.eval.mode=whole",
                                 SIZE)},
    classes=("pole", "person", "bicycle"),
    plots=(("eval_images_per_s", "mIoU"), ("gflops", "mIoU")),
    fronts={"eval_images_per_s": "higher", "gflops": "lower"})

if __name__ == "__main__":
  sweep.main(STUDY)
