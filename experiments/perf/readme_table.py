"""Regenerates the README's performance table: segjax against its references, same machine,
same run.

  python experiments/perf/readme_table.py [--runs=2] [--out=experiments/perf/results.md]

Each row is one `python -m segjax.tools.benchmark` command (printed above the table), run
`--runs` times in turn so the spread shows; every number is a median over that command's
timed steps. The machine (CPU model, cores, accelerator) is named beside every row. Takes
about 25 minutes on 2 CPU cores.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

import jax

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

B1 = ["--config=configs/segformer_b1_city.py", "--config.eval.mode=whole"]
ROWS = {
    "SegFormer-B1 512x512 batch 2: train / inference vs HF PyTorch": B1 + [
        "--config.data.crop_size=(512, 512)", "--batch_size=2", "--steps=3", "--warmup=1",
        "--compare=hf"],
    "SegFormer-B1 slide inference, one 1024x2048 image (1024 windows, stride 768) vs a "
    "window loop and mmseg; input pipeline (Cityscapes recipe, 1024x1024 crops) vs the "
    "train step": B1 + [
        "--config.data.crop_size=(1024, 1024)", "--batch_size=2", "--steps=2", "--warmup=1",
        "--compare=loop", "--compare=mmseg", "--pipeline"],
}
KEYS = ("train_images_per_s", "hf_train_images_per_s", "train_vs_hf", "eval_images_per_s",
        "hf_eval_images_per_s", "eval_vs_hf", "slide_s_per_image", "loop_slide_s_per_image",
        "slide_vs_loop", "mmseg_slide_s_per_image", "slide_vs_mmseg", "pipeline_images_per_s",
        "pipeline_vs_train", "compile_train_s", "peak_memory_gib")


def machine() -> str:
  cpu = platform.processor() or "cpu"
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  devices = jax.devices()
  return f"{cpu}, {os.cpu_count()} cores, {len(devices)} {devices[0].platform} device(s)"


def run(args):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  proc = subprocess.run([sys.executable, "-m", "segjax.tools.benchmark", *args], cwd=REPO,
                        env=env, capture_output=True, text=True)
  if proc.returncode != 0:
    sys.exit(f"python -m segjax.tools.benchmark {' '.join(args)} failed (exit status "
             f"{proc.returncode}):\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--runs", type=int, default=2)
  parser.add_argument("--out", default=os.path.join(REPO, "experiments/perf/results.md"))
  args = parser.parse_args()
  where = machine()
  lines = [f"Measured {datetime.date.today()} on {where}.", ""]
  for title, cmd in ROWS.items():
    results = [run(cmd) for _ in range(args.runs)]
    lines += [f"**{title}**", "", "    python -m segjax.tools.benchmark " + " ".join(cmd), "",
              "| " + " | ".join(["run"] + [k for k in KEYS if k in results[0]]) + " |",
              "|" + "---|" * (1 + sum(k in results[0] for k in KEYS))]
    for i, r in enumerate(results):
      lines.append("| " + " | ".join([str(i + 1)] + [str(r[k]) for k in KEYS if k in r]) + " |")
    lines.append("")
    print("\n".join(lines), flush=True)
  with open(args.out, "w") as f:
    f.write("\n".join(lines))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
