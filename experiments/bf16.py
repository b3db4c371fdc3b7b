"""bfloat16 compute against float32 on the quickstart (issue 9: "bf16 trains the quickstart to
the same mIoU within 0.02"), 3 seeds each, so the gap is read against the seed spread.

  python experiments/bf16.py                 # --scale=cpu: the quickstart cut to 300 steps
  python experiments/bf16.py --scale=paper   # the whole 1000-step quickstart (~8 min a run)

model.dtype="bfloat16" computes activations in bfloat16 with float32 parameters, optimizer
state and loss (the logits are cast to float32 before they are resized to the labels).
"""
from segjax.tools import sweep

SHORT = {"train.num_steps": 300, "train.eval_every": 300, "train.checkpoint_every": 300,
         "train.num_overlays": 0}
STUDY = sweep.Study(
    name="bf16",
    description="The quickstart (MiT-B0 + SegFormer head, synthetic shapes, 1 device) with "
                "activations in bfloat16 against float32, the same seeds; mIoU on the 100 "
                "held-out images and the run's wall time on this machine.",
    scales={"cpu": sweep.Scale("configs/quickstart.py", SHORT),
            "paper": sweep.Scale("configs/quickstart.py", {"train.num_overlays": 0})},
    settings=[sweep.Setting("float32", {"model.dtype": "float32"}),
              sweep.Setting("bfloat16", {"model.dtype": "bfloat16"})],
    plots=(("setting", "mIoU"),))

if __name__ == "__main__":
  sweep.main(STUDY)
