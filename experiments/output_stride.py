"""Study 2: output stride 32 / 16 / 8 of a dilated ResNet (DeepLab v3: ResNet + ASPP) —
what do the denser maps buy in mIoU, and what do they cost in memory and speed?

  python experiments/output_stride.py                 # --scale=cpu: 3 x 3 runs, ResNet-18
  python experiments/output_stride.py --scale=paper --set=data.root=/data/cityscapes \
      --launch=tpu:NAME:ZONE:v4-8 --runs=gs://BUCKET/runs  # ResNet-50, prints launch.sh lines

Stride 16 dilates stage 4 by 2, stride 8 stages 3 and 4 by 2 and 4 (mmseg's "d8"); the weights
are the same at every stride, only the maps grow, and ASPP's dilations grow with them (see
configs/synthetic_city_ablation.py). Memory: XLA's temporaries of the compiled train step
(segjax.tools.summary --train_memory, batch 4, one device); speed: segjax.tools.benchmark.
Writes output_stride/<scale>/results.{jsonl,md} and plots (segjax/tools/sweep.py).
"""
from segjax.tools import sweep

BED = "configs/synthetic_city_ablation.py:decoder=aspp,"
STUDY = sweep.Study(
    name="output_stride",
    description="DeepLab v3 (ASPP head, 128 channels) on a dilated ResNet-18 (cpu) / ResNet-50 "
                "(paper) at output stride 32, 16 and 8: accuracy against the train step's "
                "memory (XLA temporaries, batch 4 of 128x256, one device) and images/s on this "
                "machine. Thin and small classes are where a denser map should matter, so "
                "their IoU is listed.",
    scales={"cpu": sweep.Scale(BED + "recipe=cpu,encoder=resnet18"),
            "paper": sweep.Scale(BED + "recipe=cityscapes,encoder=resnet50")},
    settings=[sweep.Setting(f"os{s}", choices=f"output_stride={s}") for s in (32, 16, 8)],
    measure=("summary", "train_memory", "benchmark"),
    measure_flags={"train_memory": ("--batch_size=4",)},
    classes=("pole", "traffic sign", "person", "bicycle"),
    plots=(("train_temporaries_mib", "mIoU"), ("train_images_per_s", "mIoU")))

if __name__ == "__main__":
  sweep.main(STUDY)
