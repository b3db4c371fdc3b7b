"""segjax.tools.sweep: planning, the command-line overrides, the report's arithmetic, and a
real two-setting study of configs/test.py run as subprocesses, resumed and collected."""
import dataclasses
import json
import math
import os
import shlex

import pytest

from segjax.errors import ConfigError
from segjax.tools import sweep
from tests.conftest import REPO

# Two tiny settings of configs/test.py, 2 steps each (one evaluation, at the end).
TINY = {"train.num_steps": 2, "train.eval_every": 2, "train.checkpoint_every": 2,
        "train.log_every": 1, "train.num_overlays": 0, "data.synthetic_train_size": 16,
        "data.synthetic_eval_size": 8}
STUDY = sweep.Study(
    name="tiny", description="Does a wider head help a tiny SegFormer?",
    scales={"cpu": sweep.Scale("configs/test.py", TINY),
            "paper": sweep.Scale("configs/segformer_b0_synthetic_city.py")},
    settings=(sweep.Setting("head8", {"model.decode_head.channels": 8}),
              sweep.Setting("head16", {"model.decode_head.channels": 16})),
    seeds=1, measure=("summary",), classes=("disc",),
    plots=(("setting", "mIoU"), ("gflops", "mIoU")))


def test_plan_names_every_run_and_merges_overrides(tmp_path):
  runs = sweep.plan(STUDY, "cpu", str(tmp_path), seeds=2)
  assert [(r.setting.label, r.seed) for r in runs] == [
      ("head8", 0), ("head8", 1), ("head16", 0), ("head16", 1)]
  assert runs[3].workdir == str(tmp_path / "tiny" / "cpu" / "head16" / "seed1")
  assert dict(runs[3].overrides) == {**TINY, "model.decode_head.channels": 16, "seed": 1}
  cmd = runs[3].command("python")
  assert cmd[:4] == ["python", "-m", "segjax.main", "--config=configs/test.py"]
  assert "--config.model.decode_head.channels=16" in cmd and "--config.seed=1" in cmd
  assert [r.setting.label for r in sweep.plan(STUDY, "cpu", str(tmp_path), only=["head16"])] \
      == ["head16"]
  chosen = sweep.Study("c", "", {"cpu": sweep.Scale("x.py:recipe=cpu"), "paper": sweep.Scale(
      "x.py")}, (sweep.Setting("psp", choices="decoder=psp"), sweep.Setting("base")), seeds=1)
  assert [r.config for r in sweep.plan(chosen, "cpu", str(tmp_path))] == [
      "x.py:recipe=cpu,decoder=psp", "x.py:recipe=cpu"]
  assert sweep.plan(chosen, "paper", str(tmp_path))[0].config == "x.py:decoder=psp"
  paper = sweep.plan(STUDY, "paper", str(tmp_path), extra=["data.root=/data/city"])
  assert dict(paper[0].overrides)["data.root"] == "/data/city"
  assert paper[0].config == "configs/segformer_b0_synthetic_city.py"
  assert "train.num_steps" not in dict(paper[0].overrides)


def test_plan_refuses_a_bad_study(tmp_path):
  with pytest.raises(ConfigError, match="has no scale 'tpu'"):
    sweep.plan(STUDY, "tpu", str(tmp_path))
  with pytest.raises(ConfigError, match=r"--only: no setting \['head4'\]"):
    sweep.plan(STUDY, "cpu", str(tmp_path), only=["head4"])
  with pytest.raises(ConfigError, match="--set expects key=value, got 'data.root'"):
    sweep.plan(STUDY, "cpu", str(tmp_path), extra=["data.root"])
  with pytest.raises(ConfigError, match="--seeds must be >= 1"):
    sweep.plan(STUDY, "cpu", str(tmp_path), seeds=0)
  twice = sweep.Study("x", "", STUDY.scales, (sweep.Setting("a"), sweep.Setting("a")))
  with pytest.raises(ConfigError, match="evaluation labels must be unique"):
    sweep.plan(dataclasses.replace(STUDY, evaluations=(sweep.Setting("w"), sweep.Setting("w"))),
               "cpu", str(tmp_path))
  with pytest.raises(ConfigError, match="labels must be unique"):
    sweep.plan(twice, "cpu", str(tmp_path))
  unknown = sweep.Study("x", "", STUDY.scales, (sweep.Setting("a"),), measure=("flops",))
  with pytest.raises(ConfigError, match="measure 'flops'"):
    sweep.plan(unknown, "cpu", str(tmp_path))


def test_values_format_as_the_config_flag_parser_reads_them():
  from ml_collections import config_flags  # noqa: F401  (the parser the runs use)
  assert sweep.format_value(True) == "true"
  assert sweep.format_value(0.4) == "0.4"
  assert sweep.format_value((0.5, 2.0)) == "(0.5,2.0)"
  assert sweep.format_value((8,)) == "(8,)"
  assert sweep.format_value("focal") == "focal"
  with pytest.raises(ConfigError, match="cannot pass None"):
    sweep.format_value(None)


def test_tpu_launch_lines_are_launch_sh_commands(tmp_path):
  runs = sweep.plan(STUDY, "paper", "gs://bucket/runs", seeds=3)
  lines = sweep.launch_lines(runs, "tpu:my-vm:us-central2-b:v4-8")
  assert len(lines) == 6 and shlex.split(lines[5]) == [
      "./launch.sh", "tpu", "my-vm", "us-central2-b", "v4-8",
      "configs/segformer_b0_synthetic_city.py",
      "gs://bucket/runs/tiny/paper/head16/seed2", "--config.model.decode_head.channels=16",
      "--config.seed=2"]
  flip = sweep.launch_lines(runs[:1], "tpu:vm:z:v4-8", (sweep.Setting("flip", {"eval.flip": True}),))
  assert len(flip) == 2 and flip[1] == flip[0] + " --mode=evaluate --config.eval.flip=true"
  with pytest.raises(ConfigError, match="--launch must be local or tpu:NAME:ZONE"):
    sweep.launch_lines(runs, "tpu:my-vm")


def test_aggregate_gives_mean_and_sample_std_per_setting():
  rows = [{"setting": "a", "seed": 0, "step": 9, "mIoU": 0.5, "gflops": 2.0, "config": "c"},
          {"setting": "a", "seed": 1, "step": 9, "mIoU": 0.7, "gflops": 2.0, "config": "c"},
          {"setting": "b", "seed": 0, "step": 9, "mIoU": 0.6, "IoU.disc": 0.25}]
  a, b = sweep.aggregate(rows)
  assert a["n"] == 2 and a["mIoU"][0] == pytest.approx(0.6)
  assert a["mIoU"][1] == pytest.approx(math.sqrt(0.02))  # sample std (n - 1)
  assert a["gflops"] == (2.0, 0.0) and "config" not in a and "seed" not in a
  assert b["n"] == 1 and b["mIoU"][0] == 0.6 and math.isnan(b["mIoU"][1])
  assert b["IoU.disc"][0] == 0.25 and "IoU.disc" not in a
  table = sweep.markdown(STUDY, "cpu", [a, b])
  assert "| a | 2 | 60.00 ± 14.14 | 2 ± 0 |  |" in table
  assert "| b | 1 | 60.00 |  | 25.00 |" in table


def test_a_tiny_study_runs_resumes_and_reports(tmp_path, monkeypatch, capsys):
  runs_dir, out = tmp_path / "runs", tmp_path / "out"
  sweep.FLAGS.unparse_flags()
  sweep.FLAGS(["x", f"--runs={runs_dir}", f"--out={out}"])
  sweep.main_with(STUDY, os.path.join(REPO, "experiments", "tiny.py"))
  rows = [json.loads(l) for l in open(out / "results.jsonl")]
  assert [(r["setting"], r["seed"], r["step"]) for r in rows] == [("head8", 0, 2),
                                                                   ("head16", 0, 2)]
  for row in rows:  # every number is the run's own
    saved = json.load(open(runs_dir / "tiny" / "cpu" / row["setting"] / "seed0" /
                           "eval_results.json"))
    assert row["mIoU"] == saved["metrics"]["mIoU"] and 0 < row["mIoU"] <= 1
    assert row["IoU.disc"] == saved["metrics"]["IoU"]["disc"]
    assert row["run_minutes"] > 0 and row["params"] > 0 and row["gflops"] > 0
  assert rows[1]["params"] > rows[0]["params"]  # the wider head has more parameters
  table = (out / "results.md").read_text()
  assert "Does a wider head help" in table and "| head16 | 1 |" in table
  assert (out / "mIoU_vs_setting.png").stat().st_size > 1000
  assert (out / "mIoU_vs_gflops.png").exists()

  # A second invocation starts no run (all finished) and reports the same rows.
  monkeypatch.setattr(sweep, "execute", lambda run: pytest.fail(f"reran {run.workdir}"))
  sweep.main_with(STUDY, os.path.join(REPO, "experiments", "tiny.py"))
  assert "head16 seed 0: finished" in capsys.readouterr().out
  assert [json.loads(l) for l in open(out / "results.jsonl")] == rows
  # Test-time protocols over the finished runs: one row per (run, protocol), each the run's
  # own --mode=evaluate result; the flipped protocol really differs from the plain one.
  protocols = dataclasses.replace(STUDY, settings=STUDY.settings[:1], measure=(), evaluations=(
      sweep.Setting("plain"), sweep.Setting("flip", {"eval.flip": True})))
  monkeypatch.undo()
  sweep.main_with(protocols, os.path.join(REPO, "experiments", "tiny.py"))
  evals = [json.loads(l) for l in open(out / "results.jsonl")]
  assert [(r["setting"], r["seed"]) for r in evals] == [("plain", 0), ("flip", 0)]
  assert evals[0]["mIoU"] == pytest.approx(rows[0]["mIoU"], abs=1e-6)  # = training's eval
  assert evals[1]["mIoU"] != evals[0]["mIoU"] and evals[1]["evaluation"] == {"eval.flip": True}
  assert evals[1]["eval_seconds"] > 0
  saved = json.load(open(runs_dir / "tiny" / "cpu" / "head8" / "seed0" / "sweep_eval" /
                         "flip.json"))
  assert saved["metrics"]["mIoU"] == evals[1]["mIoU"]
  # --collect with one run unfinished reports the finished one only.
  (runs_dir / "tiny" / "cpu" / "head8" / "seed0" / "eval_results.json").unlink()
  sweep.FLAGS.unparse_flags()
  sweep.FLAGS(["x", f"--runs={runs_dir}", f"--out={out}", "--collect"])
  sweep.main_with(STUDY, os.path.join(REPO, "experiments", "tiny.py"))
  assert [json.loads(l)["setting"] for l in open(out / "results.jsonl")] == ["head16"]
  sweep.FLAGS.unparse_flags()


def test_a_failing_run_stops_the_study_with_its_log(tmp_path):
  broken = sweep.Study("broken", "", {"cpu": sweep.Scale("configs/test.py", TINY)},
                       (sweep.Setting("bad", {"train.num_stepz": 2}),), seeds=1)
  run, = sweep.plan(broken, "cpu", str(tmp_path))
  with pytest.raises(RuntimeError, match=r"run .*bad/seed0 failed \(exit status 2\)"):
    sweep.execute(run)
  assert "error: unknown config key 'train.num_stepz'" in open(run.log).read()


def test_the_ablation_bed_builds_every_choice_and_refuses_bad_ones():
  """configs/synthetic_city_ablation.py, the config the studies sweep: each decoder builds on
  the same encoder (same backbone parameters), aux adds a head, and bad choices are named."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from configs import synthetic_city_ablation as bed
  from segjax import models
  encoders = {}
  for decoder in bed.DECODERS:
    config = bed.get_config(f"recipe=cpu,decoder={decoder},aux=0.4")
    model = models.build_model(config)
    x = jnp.zeros((1, 64, 128, 3))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    logits, aux = jax.eval_shape(lambda v: model.apply(v, x), shapes)
    assert logits.shape[-1] == 19 and len(aux) == 1 and model.aux_loss_weights == (0.4,)
    encoders[decoder] = sum(int(np.prod(p.shape)) for p in
                            jax.tree.leaves(shapes["params"]["backbone"]))
  assert len(set(encoders.values())) == 1  # one encoder under every decoder
  cpu = bed.get_config("recipe=cpu")
  assert cpu.train.num_steps == 400 and cpu.train.batch_size == 4 and cpu.model.decode_head.channels == 128
  assert bed.get_config("recipe=cityscapes").data.name == "cityscapes"
  assert bed.get_config("recipe=cityscapes").model.decode_head.channels == 256
  assert bed.get_config("depth=1").model.backbone.depths == (1, 1, 1, 1)
  assert bed.get_config("loss=lovasz").model.decode_head.loss[1]["name"] == "lovasz"
  fast = bed.get_config("recipe=cpu,model=fast_scnn_city")
  assert fast.model.backbone.name == "fast_scnn" and fast.optim.name == "adamw"
  assert fast.train.num_steps == 400
  for bad, match in (("model=fast", "no configs/fast.py"), ("decoder=psa", "decoder='psa' is not one of"), ("lr=3", "bad choice 'lr=3'"),
                     ("loss=l2", "loss='l2'"), ("recipe=ade", "recipe='ade'")):
    with pytest.raises(ValueError, match=match):
      bed.get_config(bad)
