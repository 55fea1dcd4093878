"""ILSVRC 2012 → TFDS-compatible shards with Apache Beam."""
