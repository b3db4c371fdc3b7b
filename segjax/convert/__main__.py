"""Convert PyTorch weights to a segjax checkpoint directory.

  python -m segjax.convert --format=hf_segformer --input=PATH --output=DIR [--config=CFG]

PATH is an HF model directory (config.json + model.safetensors or pytorch_model.bin), either
encoder-only (nvidia/mit-b1) or a full segmentation model. DIR becomes a checkpoint that
`--config.init_from=DIR` loads (an encoder-only DIR leaves the head fresh) and that
`python -m segjax.main --mode=evaluate --workdir=DIR` evaluates directly.

The saved config is CFG (default configs/segformer_<variant>_city.py) with the model section
replaced by the HF architecture, and, for full models, data.num_classes = num_labels.
"""
import os
import sys

import jax
import numpy as np
from absl import app, flags, logging

from segjax import checkpoint as ckpt_lib
from segjax import models
from segjax.convert import hf_segformer
from segjax.errors import CheckpointError, SegjaxError
from segjax.tools.config_file import REPO, load_config_file

FLAGS = flags.FLAGS
flags.DEFINE_enum("format", "hf_segformer", ["hf_segformer"], "Source format.")
flags.DEFINE_string("input", None, "HF model directory.")
flags.DEFINE_string("output", None, "Output checkpoint directory (must not hold one yet).")
flags.DEFINE_string("config", None, "segjax config file for the saved config.")

_VARIANTS = {(32, 64, 160, 256): {(2, 2, 2, 2): "b0"},
             (64, 128, 320, 512): {(2, 2, 2, 2): "b1", (3, 4, 6, 3): "b2", (3, 4, 18, 3): "b3",
                                   (3, 8, 27, 3): "b4", (3, 6, 40, 3): "b5"}}


def convert(input_dir: str, output_dir: str, config_path: str = None):
  """Converts and saves; returns (config, flat converted params)."""
  hf_config, state_dict = hf_segformer.load_hf_directory(input_dir)
  overrides = hf_segformer.model_overrides(hf_config)
  bb = overrides["backbone"]
  variant = _VARIANTS.get(bb["hidden_sizes"], {}).get(bb["depths"], "b1")
  config_path = config_path or os.path.join(REPO, "configs", f"segformer_{variant}_city.py")
  config = load_config_file(config_path)
  config.model.backbone = bb
  config.model.decode_head.channels = overrides["decode_head_channels"]
  flat = hf_segformer.convert_state_dict(state_dict)
  has_head = any(k.startswith("params/decode_head/") for k in flat)
  if has_head:
    config.data.num_classes = int(hf_config.get("num_labels", len(hf_config.get("id2label", {}))))
  model = models.build_model(config)
  h, w = config.data.crop_size
  target = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, h, w, 3), np.float32)))
  target = {"params": target["params"], "batch_stats": target.get("batch_stats", {})}
  tree = hf_segformer.nest(flat)
  tree.setdefault("batch_stats", {})
  ckpt_lib.check_compatible(tree, target, input_dir, allow_missing=not has_head)
  if not has_head:
    missing_backbone = [k for k in ckpt_lib.flatten(target)
                        if k.startswith("params/backbone/") and k not in flat]
    if missing_backbone:
      raise CheckpointError(f"{input_dir}: encoder weights incomplete, first missing "
                            f"'{missing_backbone[0]}'")
  checkpointer = ckpt_lib.Checkpointer(output_dir, async_save=False)
  if checkpointer.latest_step() is not None or checkpointer.best.latest_step() is not None:
    raise CheckpointError(f"{output_dir} already holds a checkpoint; choose an empty --output")
  checkpointer.save(0, tree, config)
  checkpointer.wait()
  checkpointer.close()
  with open(os.path.join(output_dir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  n = sum(int(np.prod(v.shape)) for k, v in flat.items() if k.startswith("params/"))
  logging.info("converted %d tensors (%s parameters, %s) from %s to %s", len(flat), f"{n:,}",
               "full model" if has_head else "encoder only", input_dir, output_dir)
  return config, flat


def main(argv):
  del argv
  if not FLAGS.input or not FLAGS.output:
    print("error: --input and --output are required", file=sys.stderr)
    sys.exit(2)
  try:
    convert(FLAGS.input, FLAGS.output, FLAGS.config)
  except SegjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
