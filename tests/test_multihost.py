"""Two processes on one machine (4 CPU devices each): they train exactly like one with 8, stop
together on SIGTERM, and a failed or vanished process ends the other with one line."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

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


# ------------------------------------------------------------------------- faults on 2 hosts
def launch_two(workdir, *extra, log_dir=None):
  """Two processes x 4 CPU devices on `workdir`; stdout+stderr of process i in <workdir>.i."""
  port = free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  return [subprocess.Popen(
      [sys.executable, "-m", "segjax.main", "--config=configs/test.py", f"--workdir={workdir}",
       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}",
       "--config.train.num_steps=500", "--config.train.eval_every=1000",
       "--config.train.checkpoint_every=1000", "--config.train.log_every=1", *extra],
      cwd=REPO, env=env, stdout=open(f"{workdir}.{i}", "w"), stderr=subprocess.STDOUT)
      for i in range(2)]


def wait_all(procs, timeout):
  """Return codes of all processes; kills them all and fails if one outlives `timeout`."""
  deadline = time.time() + timeout
  try:
    return [p.wait(timeout=max(deadline - time.time(), 0.1)) for p in procs]
  except subprocess.TimeoutExpired:
    raise AssertionError(f"still running {timeout}s after the fault")
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()


def wait_for_step(workdir, procs, text="step 3/500", timeout=300):
  deadline = time.time() + timeout
  while text not in open(f"{workdir}.0").read():
    assert time.time() < deadline, open(f"{workdir}.0").read()[-3000:]
    for p in procs:
      if p.poll() is not None:
        for q in procs:
          q.kill()
        raise AssertionError(open(f"{workdir}.0").read()[-3000:])
    time.sleep(0.2)


def test_sigterm_on_both_hosts_saves_the_same_step_and_exits(tmp_path):
  """TPU preemption: SIGTERM reaches every host (at slightly different times). JAX's
  preemption sync point makes them agree on one step; both save it and exit 0."""
  workdir = tmp_path / "run"
  procs = launch_two(workdir)
  wait_for_step(workdir, procs)
  for p in procs:
    p.send_signal(signal.SIGTERM)
  codes = wait_all(procs, timeout=120)
  logs = [open(f"{workdir}.{i}").read() for i in range(2)]
  assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
  saved = [re.search(r"checkpoint of step (\d+) saved, exiting", log) for log in logs]
  assert all(saved), logs[1][-3000:]
  step = int(saved[0].group(1))
  assert int(saved[1].group(1)) == step and 3 <= step < 500
  assert ckpt_lib.Checkpointer(str(workdir), read_only=True).latest_step() == step
  assert not any(line.startswith("error:") for log in logs for line in log.splitlines())


def test_a_vanished_process_ends_the_other_with_one_line(tmp_path):
  """Process 1 is frozen (SIGSTOP) as if its host lost power: its sockets stay open and it
  sends nothing, so only the missing heartbeat can tell. (A SIGKILL on a living host closes
  its sockets instead; Gloo then either waits, which the heartbeat ends the same way, or on
  some machines aborts the survivor itself with "Connection closed by peer": parallel.py.)"""
  workdir = tmp_path / "run"
  procs = launch_two(workdir, "--peer_timeout=10")
  wait_for_step(workdir, procs)
  procs[1].send_signal(signal.SIGSTOP)
  start = time.time()
  try:
    codes = wait_all(procs[:1], timeout=60)
  finally:
    procs[1].kill()
    procs[1].wait()
  log = open(f"{workdir}.0").read()
  assert codes == [1], log[-3000:]
  assert time.time() - start < 60
  errors = [line for line in log.splitlines() if line.startswith("error:")]
  assert errors == ["error: process 1 of 2 has sent no heartbeat for 10s (crashed, killed, or "
                    "its host is down); stopping this process too (resume from the last "
                    "checkpoint)"]
  assert "Traceback" not in log


def test_an_error_on_one_host_ends_every_host_with_the_message(tmp_path):
  """Process 0 refuses to start (the workdir is locked by a live trainer: this test's own
  pid); process 1 would otherwise wait in its first collective forever."""
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "train.lock").write_text(json.dumps(
      {"host": socket.gethostname(), "pid": os.getpid(), "started": "now"}))
  procs = launch_two(workdir)
  codes = wait_all(procs, timeout=240)
  logs = [open(f"{workdir}.{i}").read() for i in range(2)]
  errors = [[l for l in log.splitlines() if l.startswith("error:")] for log in logs]
  assert codes == [2, 2], logs
  assert len(errors[0]) == 1 and errors[0][0].startswith(
      f"error: {workdir} is in use by another trainer (pid {os.getpid()} on ")
  assert errors[1] == [f"error: stopping because process 0 failed: {errors[0][0][7:]}"]
  assert not (workdir / "checkpoints").exists()
