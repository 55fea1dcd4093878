"""The run tab's text for a run that found its version up to date, and for one whose version
was replaced since: rendered from real versions the CLI publishes and the split events
validate_and_record records (asset_naming.split_extra), without a browser."""

from __future__ import annotations

import datetime
import json
import os
import types

import pytest

from imagenet_airflow import asset_naming
from imagenet_airflow.ui import data, pages
from imagenet_beam import synthetic
from tests.conftest import convert, version_dir


def _recorded(vdir: str, run_id: str, reprocessed: bool) -> data.Publication:
    """The publication as validate_and_record records it, from the version's lineage.json."""
    with open(os.path.join(vdir, "lineage.json")) as f:
        lineage = json.load(f)
    events = [
        data.SplitEvent(i, split, asset_naming.split_extra(
            vdir, lineage["options"]["file_format"], info, reprocessed))
        for i, (split, info) in enumerate(sorted(lineage["splits"].items()), start=1)
    ]
    return data.Publication(vdir, run_id, datetime.datetime.now(datetime.UTC), events)


def _run(run_id: str):
    return types.SimpleNamespace(run_id=run_id, state="success")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    manual = str(tmp_path_factory.mktemp("states-manual"))
    synthetic.generate_manual_dir(manual, num_classes=2, train_per_class=2,
                                  splits=("train",))
    data_dir = tmp_path_factory.mktemp("states-data")
    convert(manual, data_dir, "--splits=train")
    return manual, data_dir, version_dir(data_dir)


def test_a_run_that_found_the_version_up_to_date_shows_its_lineage(published):
    _, _, vdir = published
    pub = _recorded(vdir, "scheduled__later", reprocessed=False)
    html = pages.run_page(_run("scheduled__later"), pub, data.read_version(vdir))
    assert "found up to date" in html and "id='made-by'" in html
    assert "id='replaced'" not in html
    assert "class='shards'" in html  # the lineage's details are shown


def test_a_run_whose_version_was_replaced_says_so(published):
    manual, data_dir, vdir = published
    before = _recorded(vdir, "manual__first", reprocessed=True)
    convert(manual, data_dir, "--splits=train", "--num_shards=2", "--overwrite")
    html = pages.run_page(_run("manual__first"), before, data.read_version(vdir))
    assert "id='replaced'" in html
    assert "class='shards'" not in html  # not the newer version's lineage as this run's
