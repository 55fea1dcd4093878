"""ILSVRC 2012 → TFDS-compatible shards with Apache Beam."""

import os

# TensorFlow (imported later, by TFDS, to read shards back) writes its C++ start-up notes
# to stderr, which an Airflow task log shows as errors: the CPU-feature and oneDNN notes
# (its custom oneDNN operations change only float round-off, not reading records or
# decoding JPEGs). Set before any import of TensorFlow; an environment's own value wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
