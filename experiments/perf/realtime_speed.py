"""The real-time models' inference speed on whole 1024x2048 frames (the README's real-time
tables): one `python -m segjax.tools.benchmark --notrain` per config and run, batch 1, one
device, machine named.

  python experiments/perf/realtime_speed.py [--runs=2] [--only=fast_scnn_city,stdc1_city]

Randomly initialised weights (speed does not depend on them); evaluation is the whole frame
to labels (eval.mode=whole: logits, upsampling, argmax). Writes realtime_speed.md and
realtime_speed.jsonl next to itself. About 20 minutes for every config, twice, on 2 CPU cores.
"""
import argparse
import datetime
import json
import os

from readme_table import machine, run

CONFIGS = ("enet_city", "espnet_c_city", "espnet_city", "fast_scnn_city", "cgnet_city",
           "erfnet_fcn_city", "icnet_r18_d8_city", "icnet_r50_d8_city", "icnet_r101_d8_city",
           "bisenetv1_r18_d32_city", "bisenetv2_fcn_city", "stdc1_city", "stdc2_city",
           "ddrnet_23_slim_city", "ddrnet_23_city", "pidnet_s_city")
FLAGS = ("--config.data.crop_size=(1024, 2048)", "--config.eval.mode=whole", "--batch_size=1",
         "--notrain", "--steps=3", "--warmup=1")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--runs", type=int, default=2)
  parser.add_argument("--only", default="", help="comma-separated config names")
  here = os.path.dirname(os.path.abspath(__file__))
  parser.add_argument("--out", default=os.path.join(here, "realtime_speed"))
  args = parser.parse_args()
  names = [n for n in args.only.split(",") if n] or list(CONFIGS)
  unknown = sorted(set(names) - set(CONFIGS))
  if unknown:
    parser.error(f"--only: {unknown} are not among {CONFIGS}")
  where = machine()
  rows = []
  for name in names:
    cmd = [f"--config=configs/{name}.py", *FLAGS]
    for i in range(args.runs):
      result = run(cmd)
      rows.append({"config": name, "run": i + 1, **result})
      print(f"{name} run {i + 1}: {result['eval_images_per_s']} img/s, compile "
            f"{result['compile_eval_s']} s", flush=True)
  lines = [f"Measured {datetime.date.today()} on {where}: whole 1024x2048 frames, batch 1, "
           "one device, mean of 3 timed forward passes (to labels) after one untimed.", "",
           "    python -m segjax.tools.benchmark --config=configs/<config>.py " + " ".join(FLAGS),
           "", "| config | " + " | ".join(f"img/s (run {i + 1})" for i in range(args.runs))
           + " | ms / frame (best) | compile s (run 1, cache may hold it) | peak host RSS GiB |",
           "|---|" + "---:|" * (args.runs + 3)]
  for name in names:
    mine = [r for r in rows if r["config"] == name]
    best = max(r["eval_images_per_s"] for r in mine)
    lines.append(f"| `{name}.py` | " + " | ".join(str(r["eval_images_per_s"]) for r in mine)
                 + f" | {1000 / best:.0f} | {mine[0]['compile_eval_s']} | "
                 f"{max(r['peak_memory_gib'] for r in mine)} |")
  with open(args.out + ".md", "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(args.out + ".jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  print("\n".join(lines))
  print(f"wrote {args.out}.md and {args.out}.jsonl")


if __name__ == "__main__":
  main()
