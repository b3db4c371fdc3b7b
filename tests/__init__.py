"""segjax tests (a regular package: mmsegmentation installs a top-level `tests` of its own)."""
