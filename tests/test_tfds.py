"""TFDS ArrayRecord copies (segjax/data/tfds.py, segjax.tools.prepare_data): a prepared copy
reads back exactly what the file reader gives, hosts split it like the files, TFDS's own
datasets ("tfds:NAME/CONFIG") read with their label map, and mistakes are one line."""
import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from segjax import data as data_lib
from segjax.data import pipeline
from segjax.data import tfds as tfds_lib
from segjax.errors import ConfigError, DataError
from tests.conftest import REPO, load_config
from tests.test_data import write_cityscapes


def prepared(cfg, manual_dir, data_dir):
  """cfg with data.tfds_dir pointing at the copy of cfg.data.name written from manual_dir."""
  tfds_lib.prepare(cfg.data.name, str(manual_dir), str(data_dir), data_cfg=cfg.data,
                   progress=False)
  copy = cfg.copy_and_resolve_references()
  copy.data.tfds_dir = str(data_dir)
  return copy


def assert_same_examples(files_cfg, tfds_cfg, splits=("train", "val")):
  for split in splits:
    files = data_lib.build_source(files_cfg.data, split)
    copy = data_lib.build_source(tfds_cfg.data, split)
    assert isinstance(copy, tfds_lib.TfdsSource)
    assert len(copy) == len(files) > 0
    assert copy.class_names == tuple(files.class_names)
    np.testing.assert_array_equal(copy.palette, files.palette)
    for i in range(len(files)):
      (image, mask), (image2, mask2) = files.load(i), copy.load(i)
      assert image2.dtype == np.uint8 and mask2.dtype == np.uint8
      np.testing.assert_array_equal(image2, image)
      np.testing.assert_array_equal(mask2, mask)
      assert copy.size(i) == tuple(files.size(i)) == image.shape[:2]
      assert copy.name(i) == files.name(i)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
  """configs/test.py's synthetic data (64 train + 12 val) and its prepared copy."""
  cfg = load_config("test")
  root = tmp_path_factory.mktemp("synthetic")
  return cfg, prepared(cfg, root / "manual", root / "tfds")


def test_synthetic_copy_equals_the_files(synthetic):
  assert_same_examples(*synthetic)


def test_cityscapes_copy_equals_the_files(tmp_path):
  for split, hw in (("train", (24, 40)), ("val", (30, 20))):  # two sizes: size(i) matters
    write_cityscapes(tmp_path / "city", split, hw=hw, seed=len(split))
  cfg = load_config("segformer_b0_city")
  cfg.data.root = str(tmp_path / "city")
  assert_same_examples(cfg, prepared(cfg, tmp_path / "city", tmp_path / "tfds"))
  # The copy is plain TFDS: readable without segjax's builder class.
  builder = tfds.builder_from_directory(str(tmp_path / "tfds" / "segjax_cityscapes" / "1.0.0"))
  assert builder.info.splits["val"].num_examples == 4
  # A second prepare reuses it; one asking for a split it lacks says how to rebuild.
  again = tfds_lib.prepare("cityscapes", str(tmp_path / "city"), str(tmp_path / "tfds"),
                           progress=False)
  assert again["reused"] and again["examples"] == {"train": 4, "val": 4}
  with pytest.raises(DataError, match=r"without split\(s\) test.*--overwrite"):
    tfds_lib.prepare("cityscapes", str(tmp_path / "city"), str(tmp_path / "tfds"),
                     splits=["val", "test"], progress=False)
  # --overwrite rebuilds it (here after a city was added) and leaves nothing else behind.
  write_cityscapes(tmp_path / "city", "val", cities=("ulm",), hw=(30, 20))
  tfds_lib.prepare("cityscapes", str(tmp_path / "city"), str(tmp_path / "tfds"),
                   overwrite=True, progress=False)
  rebuilt = prepared(cfg, tmp_path / "city", tmp_path / "tfds")
  assert_same_examples(cfg, rebuilt)
  assert len(data_lib.build_source(rebuilt.data, "val")) == 6
  assert sorted(os.listdir(tmp_path / "tfds")) == ["segjax_cityscapes"]


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_two_hosts_split_the_global_batch_of_a_copy(synthetic):
  files_cfg, cfg = synthetic
  source = data_lib.build_source(cfg.data, "train")
  kw = dict(seed=5, global_batch=8)
  full = _take(pipeline.train_batches(source, cfg.data, **kw), 9)  # 9 x 8 > 64: two epochs
  hosts = [_take(pipeline.train_batches(source, cfg.data, process_index=h, process_count=2,
                                        **kw), 9) for h in range(2)]
  for step in range(9):
    for key in ("image", "label"):
      np.testing.assert_array_equal(
          np.concatenate([hosts[0][step][key], hosts[1][step][key]]), full[step][key])
  for step in range(9):  # disjoint halves of each global batch, whose union is all of it
    a, b = (_positions(len(source), 8, step, h) for h in range(2))
    assert not set(a) & set(b) and sorted(a + b) == sorted(_positions(len(source), 8, step))
  # ...and the copy trains on the very batches the files give.
  files = data_lib.build_source(files_cfg.data, "train")
  from_files = _take(pipeline.train_batches(files, files_cfg.data, **kw), 2)
  for a, b in zip(full, from_files):
    np.testing.assert_array_equal(a["label"], b["label"])
    np.testing.assert_array_equal(a["image"], b["image"])


def _positions(n, global_batch, step, host=None):
  local = global_batch if host is None else global_batch // 2
  stream = pipeline.stream_positions(n, 5, global_batch, step, host or 0,
                                     1 if host is None else 2)
  return [next(stream) for _ in range(local)]


def test_two_processes_read_their_halves_of_a_copy(synthetic, tmp_path):
  """Two real processes, each opening the copy and taking its slice, concurrently."""
  _, cfg = synthetic
  script = textwrap.dedent(f"""
      import sys, numpy as np
      from segjax import data as data_lib
      from segjax.data import pipeline
      from segjax.tools.config_file import load_config_file
      cfg = load_config_file("configs/test.py")
      cfg.data.tfds_dir = {cfg.data.tfds_dir!r}
      host = int(sys.argv[1])
      source = data_lib.build_source(cfg.data, "train")
      it = pipeline.train_batches(source, cfg.data, seed=5, global_batch=8, process_index=host,
                                  process_count=2)
      batches = [next(it) for _ in range(3)]
      it.close()  # a tf.data iterator still open at exit can hang the interpreter's exit
      np.savez(sys.argv[2], image=np.stack([b["image"] for b in batches]),
               label=np.stack([b["label"] for b in batches]))
      """)
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  procs = [subprocess.Popen([sys.executable, "-c", script, str(h), str(tmp_path / f"{h}.npz")],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for h in range(2)]
  for p in procs:
    out = p.communicate(timeout=120)[0]
    assert p.returncode == 0, out[-3000:]
  source = data_lib.build_source(cfg.data, "train")
  full = _take(pipeline.train_batches(source, cfg.data, seed=5, global_batch=8), 3)
  halves = [np.load(tmp_path / f"{h}.npz") for h in range(2)]
  for step in range(3):
    for key in ("image", "label"):
      np.testing.assert_array_equal(
          np.concatenate([halves[0][key][step], halves[1][key][step]]), full[step][key])


# ----------------------------------------------------------------------- TFDS's own datasets
NUM_CLASSES = 4  # after reduce_zero_label: stored ids 1..4 are classes 0..3, 0 is ignored


def _scene(split: str, i: int):
  """JPEG image bytes and the RGB annotation PNG (R: class id 0..4, G: instance id)."""
  rng = np.random.RandomState([len(split), i])
  h, w = 16 + 4 * i, 24
  image = rng.randint(0, 256, (h, w, 3), dtype=np.uint8)
  annotation = np.stack([rng.randint(0, NUM_CLASSES + 1, (h, w)),
                         rng.randint(0, 9, (h, w)), np.zeros((h, w))], -1).astype(np.uint8)
  out = io.BytesIO()
  Image.fromarray(image).save(out, format="JPEG")
  return out.getvalue(), annotation


class SegjaxTestSceneParse(tfds.core.GeneratorBasedBuilder):
  """scene_parse150's features (JPEG "image", 3-channel PNG "annotation" with the class id
  in R), with a builder config so that "tfds:NAME/CONFIG" is exercised."""
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="semantic")]
  code_path = None  # no checksums to find (see SegjaxBuilder in segjax/data/tfds.py)

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(encoding_format="jpeg"),
        "annotation": tfds.features.Image(encoding_format="png"),
    }))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples("train", 3),
            "validation": self._generate_examples("validation", 2)}

  def _generate_examples(self, split, n):
    for i in range(n):
      image, annotation = _scene(split, i)
      yield f"{split}{i}", {"image": image, "annotation": annotation}


@pytest.fixture(scope="module")
def scene_parse(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds_own")
  builder = SegjaxTestSceneParse(data_dir=str(data_dir), config="semantic",
                                 file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      try_download_gcs=False))
  cfg = load_config("test")
  cfg.data.name = "tfds:segjax_test_scene_parse/semantic"
  cfg.data.tfds_dir = str(data_dir)
  cfg.data.num_classes = NUM_CLASSES
  cfg.data.class_names = ("wall", "floor", "tree", "ceiling")
  cfg.data.tfds_label_map = "reduce_zero_label"
  cfg.data.eval_split = "validation"
  return cfg, builder


def test_tfds_dataset_reads_with_its_label_map(scene_parse):
  cfg, builder = scene_parse
  assert data_lib.class_names(cfg.data) == ("wall", "floor", "tree", "ceiling")
  assert data_lib.palette(cfg.data).shape == (NUM_CLASSES, 3)
  source = data_lib.build_source(cfg.data, "validation")
  assert len(source) == 2 and source.class_names == cfg.data.class_names
  # TFDS shuffles by key hash, so match examples by their (distinct) heights.
  raw = {_scene("validation", i)[1].shape[0]: _scene("validation", i) for i in range(2)}
  for i in range(len(source)):
    image, mask = source.load(i)
    jpeg, annotation = raw[image.shape[0]]
    np.testing.assert_array_equal(image, np.asarray(Image.open(io.BytesIO(jpeg))))
    expected = np.where(annotation[..., 0] == 0, 255, annotation[..., 0] - 1)
    np.testing.assert_array_equal(mask, expected)
    assert source.size(i) == image.shape[:2]
    assert source.name(i) == f"{i:06d}"
  # Evaluation plans its shape buckets from size(i), then reads the masks it planned for.
  plan = pipeline.plan_eval(source, (48, 48), 2)
  batches = list(pipeline.eval_batches(source, plan))
  labels = {int(i): label for b in batches for i, label in zip(b["index"], b["label"]) if i >= 0}
  assert sorted(labels) == [0, 1]
  for i, label in labels.items():
    np.testing.assert_array_equal(label, source.load(i)[1])
  # A slice of a TFDS split is a split too.
  assert len(data_lib.build_source(cfg.data, "train[1:]")) == 2


def test_tfds_dataset_config_mistakes_are_named(scene_parse):
  cfg, _ = scene_parse
  bad = cfg.copy_and_resolve_references()
  with pytest.raises(ConfigError, match=r"no split 'val' \(its splits: train, validation\)"):
    data_lib.build_source(bad.data, "val")
  bad.data.class_names = ()
  with pytest.raises(ConfigError, match=r"data.class_names must list the classes"):
    data_lib.build_source(bad.data, "train")
  bad = cfg.copy_and_resolve_references()
  bad.data.tfds_label_key = "segmentation"
  with pytest.raises(ConfigError, match=r"tfds_label_key='segmentation' is not an image "
                                        r"feature.*image, annotation"):
    data_lib.build_source(bad.data, "train")
  bad = cfg.copy_and_resolve_references()
  bad.data.tfds_label_map = ""  # raw ids 0..4 against 4 classes: label 4 is out of range
  with pytest.raises(DataError, match=r"label value\(s\) \[4\] outside 0..3"):
    for i in range(3):
      data_lib.build_source(bad.data, "train").load(i)
  bad = cfg.copy_and_resolve_references()
  bad.data.tfds_dir = str(scene_parse[1].data_dir) + "_elsewhere"
  with pytest.raises(DataError, match=r"holds no prepared segjax_test_scene_parse/semantic "
                                      r".*tfds build"):
    data_lib.build_source(bad.data, "train")


# ----------------------------------------------------------------------- errors, one line
def test_unprepared_tfds_dir_names_the_directory_and_the_command(tmp_path):
  cfg = load_config("test")
  cfg.data.tfds_dir = str(tmp_path / "never")
  with pytest.raises(DataError) as err:
    data_lib.build_source(cfg.data, "train")
  message = str(err.value)
  assert "\n" not in message
  assert f"data.tfds_dir={tmp_path / 'never'} holds no prepared copy of synthetic" in message
  assert (f"python -m segjax.tools.prepare_data --dataset=synthetic --manual_dir=<the "
          f"synthetic files> --data_dir={tmp_path / 'never'}") in message
  assert not (tmp_path / "never").exists()  # reading created nothing


def test_prepare_data_cli_on_a_missing_manual_dir_is_one_line(tmp_path):
  missing = tmp_path / "no_cityscapes"
  result = subprocess.run(
      [sys.executable, "-m", "segjax.tools.prepare_data", "--dataset=cityscapes",
       f"--manual_dir={missing}", f"--data_dir={tmp_path / 'tfds'}"],
      cwd=REPO, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == 2, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  assert f"{missing}/leftImg8bit/train does not exist" in lines[0]
  assert "Traceback" not in result.stdout + result.stderr
  assert not (tmp_path / "tfds").exists() or not os.listdir(tmp_path / "tfds")


def test_prepare_data_cli_reports_what_it_wrote(tmp_path):
  write_cityscapes(tmp_path / "city", "val")
  result = subprocess.run(
      [sys.executable, "-m", "segjax.tools.prepare_data", "--dataset=cityscapes",
       f"--manual_dir={tmp_path / 'city'}", f"--data_dir={tmp_path / 'tfds'}", "--splits=val"],
      cwd=REPO, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[0].split() == ["val", "4", "examples"]
  assert "KiB in" in lines[1] and lines[1].endswith(" s")
  assert lines[-1] == (f"read it with: --config.data.name=cityscapes "
                       f"--config.data.tfds_dir={tmp_path / 'tfds'}")


@pytest.mark.parametrize("name", sorted(__import__("tests.dataset_fixtures",
                                                   fromlist=["WRITERS"]).WRITERS))
def test_every_dataset_prepares_from_its_official_layout(name, tmp_path):
  """Each registered public dataset, written in its official layout, prepares into a copy
  that reads back exactly the file reader's examples, with the expected class ids."""
  from tests.dataset_fixtures import WRITERS
  expected = WRITERS[name](tmp_path / "raw")
  cfg = load_config("test")
  cfg.data.name = name
  cfg.data.root = str(tmp_path / "raw")
  cfg.data.num_classes = len(data_lib.class_names(cfg.data))
  splits = sorted(s for s in expected if s.isidentifier())  # not "gtCoarse/train", "a+b"
  tfds_lib.prepare(name, str(tmp_path / "raw"), str(tmp_path / "tfds"), splits=splits,
                   data_cfg=cfg.data, progress=False)
  copy = cfg.copy_and_resolve_references()
  copy.data.tfds_dir = str(tmp_path / "tfds")
  assert_same_examples(cfg, copy, splits=splits)
  for split in splits:
    source = data_lib.build_source(copy.data, split)
    got = {source.name(i): source.load(i)[1] for i in range(len(source))}
    assert list(got) == list(expected[split])
    for key, mask in expected[split].items():
      np.testing.assert_array_equal(got[key], mask)
  # Two hosts reading the copy take the two halves of the global batch.
  train = data_lib.build_source(copy.data, "train")

  def first_batch(**hosts):
    it = pipeline.train_batches(train, copy.data, seed=0, global_batch=2, **hosts)
    batch = next(it)
    it.close()
    return batch

  whole = first_batch()
  for h in (0, 1):
    half = first_batch(process_index=h, process_count=2)
    np.testing.assert_array_equal(half["label"], whole["label"][h:h + 1])
    np.testing.assert_array_equal(half["image"], whole["image"][h:h + 1])
