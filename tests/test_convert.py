"""HF transformers SegFormer -> segjax: exact logits parity and checkpoint round trips.

The HF models are random-initialised (no download), which makes them exact references.
"""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import require  # noqa: E402

torch = require("torch")
transformers = require("transformers")

from segjax import models  # noqa: E402
from segjax.checkpoint import Checkpointer  # noqa: E402
from segjax.convert import __main__ as convert_main  # noqa: E402
from segjax.errors import CheckpointError  # noqa: E402
from segjax.evaluate import abstract_variables  # noqa: E402
from segjax.inference import Segmenter  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.test_models import HF_PARAMS_150, segformer_config  # noqa: E402

VARIANTS = {"b0": ([32, 64, 160, 256], [2, 2, 2, 2], 256),
            "b1": ([64, 128, 320, 512], [2, 2, 2, 2], 256),
            "b2": ([64, 128, 320, 512], [3, 4, 6, 3], 768)}


def hf_model(variant, num_labels=19, seed=0, encoder_only=False):
  hidden, depths, channels = VARIANTS[variant]
  cfg = transformers.SegformerConfig(hidden_sizes=hidden, depths=depths,
                                     decoder_hidden_size=channels, num_labels=num_labels,
                                     num_attention_heads=[1, 2, 5, 8])
  torch.manual_seed(seed)
  cls = (transformers.SegformerForImageClassification if encoder_only
         else transformers.SegformerForSemanticSegmentation)
  model = cls(cfg).eval()
  if not encoder_only:  # non-trivial BatchNorm statistics, so they are really converted
    with torch.no_grad():
      bn = model.decode_head.batch_norm
      bn.running_mean.uniform_(-0.5, 0.5)
      bn.running_var.uniform_(0.5, 2.0)
  return model


@pytest.mark.parametrize("variant", ["b0", "b2"])
def test_logits_match_hf(tmp_path, variant):
  model = hf_model(variant)
  model.save_pretrained(tmp_path / "hf")
  config, _ = convert_main.convert(str(tmp_path / "hf"), str(tmp_path / "jax"))
  seg = Segmenter.from_workdir(str(tmp_path / "jax"))
  x = np.random.RandomState(0).randn(1, 3, 67, 93).astype(np.float32)  # odd size
  with torch.no_grad():
    ref = model(pixel_values=torch.from_numpy(x)).logits.numpy().transpose(0, 2, 3, 1)
  ours = seg.model.apply(seg.variables, jnp.asarray(x.transpose(0, 2, 3, 1)), train=False)[0]
  assert ours.shape == ref.shape
  np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-4, rtol=0)
  assert np.max(np.abs(np.asarray(ours) - ref)) <= 1e-4


@pytest.mark.parametrize("variant", ["b0", "b1", "b2"])
def test_param_counts_match_live_hf(variant):
  ref = hf_model(variant, num_labels=150).num_parameters()
  assert ref == HF_PARAMS_150[variant]
  model = models.build_model(segformer_config(variant))
  v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(v["params"])) == ref


def test_encoder_only_init_from_keeps_head_fresh(tmp_path, test_config):
  enc = hf_model("b0", encoder_only=True)
  enc.save_pretrained(tmp_path / "mit")
  _, flat = convert_main.convert(str(tmp_path / "mit"), str(tmp_path / "jax"))
  assert not any(k.startswith("params/decode_head") for k in flat)
  config = segformer_config("b0", 19)
  config.model.backbone = {"name": "mit", "hidden_sizes": (32, 64, 160, 256),
                           "depths": (2, 2, 2, 2), "num_heads": (1, 2, 5, 8),
                           "layer_norm_eps": 1e-5}
  model = models.build_model(config)
  mesh = __import__("segjax.parallel", fromlist=["make_mesh"]).make_mesh()
  fresh = jax.tree.map(lambda s: jnp.full(s.shape, 7.0, s.dtype),
                       abstract_variables(model, config, mesh))
  _, restored = Checkpointer(str(tmp_path / "jax")).restore_model("latest", fresh,
                                                                   allow_missing=True)
  q = enc.segformer.encoder.block[1][0].attention.self.query.weight.detach().numpy()
  np.testing.assert_array_equal(restored["params"]["backbone"]["block1_0"]["attn"]["query"]
                                ["kernel"], q.T)
  assert np.all(np.asarray(restored["params"]["decode_head"]["classifier"]["kernel"]) == 7.0)


def test_unknown_keys_are_refused(tmp_path):
  model = hf_model("b0")
  model.save_pretrained(tmp_path / "hf")
  from safetensors.numpy import load_file, save_file
  sd = load_file(str(tmp_path / "hf" / "model.safetensors"))
  sd["segformer.encoder.extra_token"] = np.zeros(3, np.float32)
  save_file(sd, str(tmp_path / "hf" / "model.safetensors"))
  with pytest.raises(CheckpointError, match="no segjax counterpart: segformer.encoder.extra_token"):
    convert_main.convert(str(tmp_path / "hf"), str(tmp_path / "jax"))
  assert not os.path.exists(tmp_path / "jax")


def test_command_line_converts_and_refuses_to_overwrite(tmp_path):
  hf_model("b0").save_pretrained(tmp_path / "hf")
  cmd = [sys.executable, "-m", "segjax.convert", "--format=hf_segformer",
         f"--input={tmp_path / 'hf'}", f"--output={tmp_path / 'jax'}"]
  first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert first.returncode == 0, first.stderr[-3000:]
  assert json.load(open(tmp_path / "jax" / "config.json"))["data"]["num_classes"] == 19
  second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert second.returncode == 2
  assert [l for l in second.stderr.splitlines() if l.startswith("error:")] == [
      f"error: {tmp_path / 'jax'} already holds a checkpoint; choose an empty --output"]
