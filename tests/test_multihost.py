"""Two processes on one machine (4 CPU devices each) train exactly like one with 8."""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import optax

from segjax import checkpoint as ckpt_lib
from segjax import evaluate, models, parallel, train
from tests.conftest import REPO, load_config

# A large Adam eps: parameters whose true gradient is exactly zero (biases feeding a
# train-mode BatchNorm) would otherwise take +-lr steps driven by float noise, which differs
# with the reduction order across processes. Real gradients still move every other weight.
OVERRIDES = ["--config.train.num_steps=4", "--config.train.eval_every=4",
             "--config.train.checkpoint_every=4", "--config.optim.eps=1e-3"]


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
  port = free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  procs = [subprocess.Popen(
      [sys.executable, "-m", "segjax.main", "--config=configs/test.py",
       f"--workdir={tmp_path / 'multi'}", f"--coordinator_address=127.0.0.1:{port}",
       "--num_processes=2", f"--process_id={i}", *OVERRIDES],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outputs = []
  for p in procs:
    try:
      outputs.append(p.communicate(timeout=400)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-4000:]
  assert "process 0 of 2, 4 local / 8 global devices" in outputs[0]
  assert "process 1 of 2" in outputs[1]

  config = load_config("test")
  config.train.num_steps = config.train.eval_every = config.train.checkpoint_every = 4
  config.optim.eps = 1e-3
  single = train.train_and_evaluate(config, str(tmp_path / "single"))

  multi = json.load(open(tmp_path / "multi" / "eval_results.json"))
  assert multi["step"] == 4
  assert multi["metrics"]["num_images"] == single["num_images"] == 12
  np.testing.assert_allclose(multi["metrics"]["mIoU"], single["mIoU"], atol=1e-5)
  model = models.build_model(config)
  target = evaluate.abstract_variables(model, config, parallel.make_mesh())
  _, a = ckpt_lib.Checkpointer(str(tmp_path / "multi")).restore_model("latest", target)
  _, b = ckpt_lib.Checkpointer(str(tmp_path / "single")).restore_model("latest", target)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6), a, b)
  # ...and training really moved the weights, so the equality above is not vacuous.
  init = train.init_state(model, config, parallel.make_mesh(), lambda p: optax.sgd(0.0))[0]
  moved = max(float(np.abs(x - y).max()) for x, y in zip(jax.tree.leaves(a["params"]),
                                                        jax.tree.leaves(init.params)))
  assert moved > 1e-3
