"""The real-time models (BiSeNet V1/V2, STDC1/2) beyond their mmseg parity rows
(tests/test_mmseg_parity.py: logits, auxiliary heads, parameter counts): each recipe trains
one step and evaluates from its own config file with the model at test width, and the
`align_corners` of STDC's heads reaches the model, its losses and its evaluation.

STDC's detail loss itself is compared with mmseg's STDCHead in tests/test_losses.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax import evaluate, losses, models
from segjax.errors import ConfigError
from segjax.models import layers
from tests import mmseg_reference as ref
from tests.conftest import check_one_step_run, load_config, one_step_run

SHRINK = {"bisenetv1_r18_d32_city": ref.shrink_bisenetv1_model,
          "bisenetv2_fcn_city": ref.shrink_bisenetv2_model,
          "stdc1_city": ref.shrink_stdc_model, "stdc2_city": ref.shrink_stdc_model}


def tiny_config(name: str):
  """configs/<name>.py with its model at the parity test's widths (the same shrink function;
  its mmseg half goes to a throwaway dict of the same shape) and configs/test.py's data."""
  config = load_config(name)
  model = config.model.to_dict()
  mm = {"backbone": {"backbone_cfg": {}}, "decode_head": {},
        "auxiliary_head": [{} for _ in model.get("auxiliary_head", ())]}
  SHRINK[name](mm, model)
  return one_step_run(config, model, eval_mode="whole")


@pytest.mark.slow
def test_stdc_recipe_trains_one_step_and_evaluates(tmp_path):
  """SGD with warmup, every head's losses (OHEM cross-entropy on the decode and FCN auxiliary
  heads, the detail losses on the detail head, the aligned heads' logits upsampled with
  corners aligned), whole-image evaluation, a checkpoint. STDC1 only: the BiSeNets' heads are
  plain FCN heads with cross-entropy, which other recipes train end to end already, and a
  step of each took 1.5-2.5 min on 2 CPU cores (mostly compiling)."""
  config = tiny_config("stdc1_city")
  check_one_step_run(config, tmp_path)


def test_stdc_heads_carry_align_corners():
  """mmseg's STDC config: decode head and detail head align corners, the FCN aux heads not."""
  model = models.build_model(load_config("stdc1_city"))
  assert model.align_corners == (True, False, False, True)
  assert evaluate.corners_aligned(model)
  plain = models.build_model(load_config("bisenetv1_r18_d32_city"))
  assert plain.align_corners == () and not evaluate.corners_aligned(plain)


def test_align_corners_must_be_a_bool():
  config = load_config("stdc1_city")
  model = config.model.to_dict()
  model["decode_head"]["align_corners"] = "yes"  # a ConfigDict override would refuse it
  config.model = model
  with pytest.raises(ConfigError, match=r"model.decode_head.align_corners"):
    models.build_model(config)


def test_evaluation_and_loss_upsample_aligned_heads_with_corners_aligned():
  """What the model's flags change: whole-image logits are the head's logits resized with
  corners aligned, and an aligned output's loss sees them resized so."""
  config = tiny_config("stdc1_city")
  config.data.num_classes = 3
  model = models.build_model(config)
  images = jnp.asarray(np.random.RandomState(0).randn(1, 45, 61, 3), jnp.float32)
  variables = model.init(jax.random.key(0), images, train=False)
  head_logits, aux = model.apply(variables, images, train=False)
  whole = evaluate.make_logits_fn(model, config.eval, 3)(variables, images)
  np.testing.assert_allclose(whole, layers.resize_align_corners(head_logits, (45, 61)),
                             rtol=1e-6, atol=1e-6)
  assert not np.allclose(whole, layers.resize_bilinear(head_logits, (45, 61)), atol=1e-3)

  labels = jnp.asarray(np.random.RandomState(1).randint(0, 3, (1, 45, 61)))
  ce = ((("cross_entropy", 1.0, ()),),)
  aligned, _ = losses.segmentation_loss(head_logits, (), labels, (), ce, (True,))
  plain, _ = losses.segmentation_loss(head_logits, (), labels, (), ce)
  expected = losses.cross_entropy(layers.resize_align_corners(head_logits, (45, 61)), labels)
  np.testing.assert_allclose(float(aligned), float(expected), rtol=1e-6)
  assert abs(float(aligned) - float(plain)) > 1e-4
  assert len(aux) == 3 and aux[2].shape[-1] == 2  # the detail head: edge / no edge
