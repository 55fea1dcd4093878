"""Where each thing that varies lives: one room each, nothing restated elsewhere."""

from __future__ import annotations

import os
import re

from tests.conftest import ROOT

PACKAGE = os.path.join(ROOT, "beam", "imagenet_beam")
CODE_DIRS = (PACKAGE, os.path.join(ROOT, "plugins"), os.path.join(ROOT, "dags"))


def _sources(exclude: str | None = None) -> dict[str, str]:
    found = {}
    for top in CODE_DIRS:
        for root, _, files in os.walk(top):
            for name in files:
                path = os.path.join(root, name)
                if name.endswith(".py") and not (exclude and path.startswith(exclude)):
                    found[os.path.relpath(path, ROOT)] = open(path, encoding="utf-8").read()
    return found


def test_only_formats_ask_which_file_format():
    pattern = re.compile(r"file_format\s*[!=]=|==\s*(TFRECORD|ARRAY_RECORD)\b")
    offenders = [p for p, text in _sources(os.path.join(PACKAGE, "formats")).items()
                 if pattern.search(text)]
    assert offenders == []


def test_only_the_layout_builds_shard_names():
    pattern = re.compile(r"""DATASET_NAME\s*\+\s*["']-|\{dataset\.DATASET_NAME\}-\{split\}"""
                         r"""|imagenet2012-\{split\}\.""")
    offenders = [p for p, text in _sources().items()
                 if pattern.search(text) and not p.endswith("imagenet_beam/layout.py")]
    assert offenders == []


def test_only_the_tarball_source_knows_train_is_a_tar_of_class_tars():
    offenders = [p for p, text in _sources().items()
                 if re.search(r"list_inner_tars|index_inner_tar|index_flat_archive", text)
                 and not p.endswith("sources/tarballs.py")]
    assert offenders == []


def test_each_setting_is_declared_once():
    """Setting names appear as argparse flags or Param choices only through settings.py."""
    for path, text in _sources().items():
        if path.endswith("imagenet_beam/settings.py"):
            continue
        assert "add_argument(\"--file_format" not in text, path
        assert not re.search(r"enum=\[\s*\"tfrecord\"", text), path
        assert not re.search(r"enum=\[\s*\"fail\"", text), path

