"""OpenLineage for the `imagenet2012` DAG: the archives in, the published splits out.

When the OpenLineage provider is configured (a transport, see the README), its listener asks
every finished task for its lineage. Two tasks answer, because they are `lineage_task`s: a
TaskFlow `@task` whose operator implements `get_openlineage_facets_on_complete`, the hook the
provider's `DefaultExtractor` calls for the task's COMPLETE event. The operator keeps what its
function returned (and the arguments it was called with); a builder turns that into datasets:

- `verify_archives` → `archives_read`: inputs = the archives it checked.
- `validate_and_record` → `archives_to_splits`: inputs = the same archives, outputs = one
  dataset per published split.

An archive is the dataset `file` / absolute path (or `gs://bucket` / object name) with the
facet `imagenet2012_archive` (file name, size, sha256, md5, member count, and whether the
sha256 was checked against the value image-net.org publishes), plus the input facet
`inputStatistics` (bytes read) when this run read it. A split is named like its Airflow Asset
(`<version dir>/imagenet2012-<split>`) and carries the output facet `outputStatistics`
(rowCount = examples, size = bytes, fileCount = shards), `version` (datasetVersion "5.1.0"),
`storage` (tfds, file format), `schema` (image, label, file_name) and `imagenet2012_split`
(the split, and whether this run wrote it or found it published and unchanged).

Without OpenLineage configured, the provider registers no listener, nobody calls
`get_openlineage_facets_on_complete`, and the only difference to a plain `@task` is that the
operator holds a reference to its return value. The OpenLineage client is imported only inside
the builders, so parsing the DAG never imports it.

(Not named `openlineage.py`: Airflow imports every file in the plugins folder as a top-level
module named after the file, which would shadow the `openlineage` client package.)
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk.bases.decorator import DecoratedOperator, task_decorator_factory

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk.definitions.context import Context

# (what the task returned, its arguments by parameter name, the run's params) → lineage
LineageBuilder = Callable[[Any, Mapping[str, Any], Mapping[str, Any]], "OperatorLineage | None"]

ARCHIVE_FACET = "imagenet2012_archive"
SPLIT_FACET = "imagenet2012_split"
# Custom facets name their schema; these are identifiers, documented in this module and README.
_SCHEMA_URN = "urn:imagenet-beam:openlineage:facets:1-0-0"


class LineageTaskOperator(DecoratedOperator, PythonOperator):
    """A TaskFlow task whose OpenLineage COMPLETE event carries the datasets its builder
    derives from what the task returned."""

    template_fields = ("templates_dict", "op_args", "op_kwargs")
    template_fields_renderers = {"templates_dict": "json", "op_args": "py", "op_kwargs": "py"}
    custom_operator_name = "@task"

    def __init__(self, *, openlineage: LineageBuilder, python_callable, op_args, op_kwargs,
                 **kwargs) -> None:
        super().__init__(
            kwargs_to_upstream={
                "python_callable": python_callable,
                "op_args": op_args,
                "op_kwargs": op_kwargs,
            },
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            **kwargs,
        )
        self.openlineage = openlineage
        self._outcome: tuple[Any, dict, dict] | None = None

    def execute(self, context: Context) -> Any:
        self._outcome = None
        result = super().execute(context)
        # By now op_args/op_kwargs hold the resolved XCom values; they are only kept here.
        arguments = inspect.signature(self.python_callable).bind_partial(
            *self.op_args, **self.op_kwargs
        ).arguments
        self._outcome = (result, dict(arguments), dict(context["params"]))
        return result

    def get_openlineage_facets_on_complete(self, task_instance) -> OperatorLineage | None:
        """Called by the OpenLineage listener (only when OpenLineage is enabled)."""
        if self._outcome is None:
            return None
        return self.openlineage(*self._outcome)


def lineage_task(openlineage: LineageBuilder, **kwargs):
    """`@task(...)` with `openlineage=builder` reporting the task's datasets."""
    return task_decorator_factory(
        decorated_operator_class=LineageTaskOperator, openlineage=openlineage, **kwargs
    )


# --- naming -----------------------------------------------------------------------------


def dataset_id(path: str) -> tuple[str, str]:
    """OpenLineage's (namespace, name) for a file: ("file", absolute path) or
    ("gs://bucket", object name), as the Airflow providers translate such Assets."""
    if "://" not in path:
        return "file", os.path.abspath(path)
    scheme, _, rest = path.partition("://")
    if scheme == "file":
        return "file", rest
    authority, _, name = rest.partition("/")
    return f"{scheme}://{authority}", name


def split_dataset_id(version_dir: str, split: str, output=None) -> tuple[str, str]:
    """A published split: the shards' common prefix, as in the split's Airflow Asset URI
    (output: the `layout.Output` published, imagenet2012 unless told)."""
    from imagenet_airflow.asset_naming import split_location
    from imagenet_beam import layout

    namespace, name = dataset_id(version_dir)
    return namespace, split_location(name, split, output or layout.IMAGENET2012)


# --- facets -----------------------------------------------------------------------------


@functools.cache
def _custom_facets():
    """The custom facet classes, defined on first use so that the client is imported late."""
    import attr
    from openlineage.client.facet_v2 import DatasetFacet

    @attr.define
    class ImageNetArchiveDatasetFacet(DatasetFacet):
        fileName: str  # noqa: N815
        size: int
        sha256: str
        md5: str
        numMembers: int  # noqa: N815
        # True: the size and sha256 were compared with image-net.org's published values (a
        # mismatch fails verify_archives). False: verify_checksums was off.
        checksumVerified: bool  # noqa: N815

        @staticmethod
        def _get_schema() -> str:
            return f"{_SCHEMA_URN}#/$defs/ImageNetArchiveDatasetFacet"

    @attr.define
    class ImageNetSplitDatasetFacet(DatasetFacet):
        split: str
        # False: this run found the split published from the same archives and settings and
        # only validated it; the statistics describe the published split.
        reprocessed: bool

        @staticmethod
        def _get_schema() -> str:
            return f"{_SCHEMA_URN}#/$defs/ImageNetSplitDatasetFacet"

    return ImageNetArchiveDatasetFacet, ImageNetSplitDatasetFacet


def archive_input(archive: Mapping, *, read_in_this_task: bool):
    """One archive (an `ArchiveCheck` dict from verify_archives) as an input dataset."""
    from openlineage.client.event_v2 import InputDataset
    from openlineage.client.facet_v2 import input_statistics_input_dataset

    archive_facet, _ = _custom_facets()
    namespace, name = dataset_id(archive["path"])
    input_facets = {}
    if read_in_this_task:
        input_facets["inputStatistics"] = (
            input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
                size=archive["size"],
                # an extracted folder is read file by file
                fileCount=archive["num_members"] if archive.get("layout") else 1,
            )
        )
    return InputDataset(
        namespace=namespace,
        name=name,
        facets={
            ARCHIVE_FACET: archive_facet(
                fileName=archive["name"],
                size=archive["size"],
                sha256=archive["sha256"],
                md5=archive["md5"],
                numMembers=archive["num_members"],
                checksumVerified=archive["verified_against"] is not None,
            )
        },
        inputFacets=input_facets,
    )


# The features of each output's examples: TFDS's imagenet2012 5.1.0 (and its subsets),
# imagenet2012_real, and the classic TF/TPU schema.
_IMAGE = ("image", "Image", "JPEG bytes; tfds.features.Image(shape=(None, None, 3), dtype=uint8)")
_FILE_NAME = ("file_name", "Text", "the image's member name in the ImageNet archive")
_SCHEMA_FIELDS = (
    _IMAGE,
    ("label", "ClassLabel", "int64; 1000 classes, -1 for the unlabelled test split"),
    _FILE_NAME,
)
_REAL_FIELDS = (
    _IMAGE,
    ("original_label", "ClassLabel", "int64; the ILSVRC 2012 validation label"),
    ("real_label", "Sequence(ClassLabel)", "int64 list; ReaL's labels, possibly none"),
    _FILE_NAME,
)
_CLASSIC_FIELDS = (
    ("image/encoded", "bytes", "RGB JPEG"),
    ("image/class/label", "int64", "1-1000: TFDS's label + 1 (0 is background)"),
    ("image/class/synset", "bytes", "the wnid"),
    ("image/class/text", "bytes", "the devkit's words for the class, else the wnid"),
    ("image/filename", "bytes", "the image's member name in the ImageNet archive"),
    ("image/height", "int64", "pixels"),
    ("image/width", "int64", "pixels"),
    ("image/object/bbox/xmin", "float list", "boxes relative to the image; also ymin, xmax, "
     "ymax and bbox/label"),
)


def _fields(output) -> tuple:
    if output.classic_names:
        return _CLASSIC_FIELDS
    return _REAL_FIELDS if output.name == "imagenet2012_real" else _SCHEMA_FIELDS


def split_output(version_dir: str, split: str, info: Mapping, *, file_format: str,
                 reprocessed: bool, output=None):
    """One published split (counts as in lineage.json) as an output dataset (output: the
    `layout.Output` published, imagenet2012 unless told)."""
    from openlineage.client.event_v2 import OutputDataset
    from openlineage.client.facet_v2 import (
        dataset_version_dataset,
        output_statistics_output_dataset,
        schema_dataset,
        storage_dataset,
    )

    from imagenet_beam import layout

    output = output or layout.IMAGENET2012
    _, split_facet = _custom_facets()
    namespace, name = split_dataset_id(version_dir, split, output)
    return OutputDataset(
        namespace=namespace,
        name=name,
        facets={
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=output.version
            ),
            "storage": storage_dataset.StorageDatasetFacet(
                storageLayer="tfrecord" if output.classic_names else "tfds",
                fileFormat=file_format,
            ),
            "schema": schema_dataset.SchemaDatasetFacet(
                fields=[
                    schema_dataset.SchemaDatasetFacetFields(
                        name=field, type=kind, description=description
                    )
                    for field, kind, description in _fields(output)
                ]
            ),
            SPLIT_FACET: split_facet(split=split, reprocessed=reprocessed),
        },
        outputFacets={
            "outputStatistics": output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=info["num_examples"], size=info["num_bytes"], fileCount=info["num_shards"]
            )
        },
    )


# --- builders ---------------------------------------------------------------------------


def archives_read(result: Mapping, arguments: Mapping, params: Mapping) -> OperatorLineage:
    """verify_archives: the archives it checked (read unless its cache answered)."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(
        inputs=[
            archive_input(a, read_in_this_task=not a.get("cached"))
            for a in sorted(result["archives"], key=lambda a: a["path"])
        ]
    )


def archives_to_splits(result: Mapping, arguments: Mapping, params: Mapping) -> OperatorLineage:
    """validate_and_record: the run's archives in, the validated published splits out.

    `result` is the task's summary (counts per requested split, read from the published
    lineage.json and checked against the shards); `arguments["verified"]` is what
    verify_archives returned. Of the params only `file_format`, `dataset` and `schema` are
    used.
    """
    from airflow.providers.openlineage.extractors import OperatorLineage

    from imagenet_beam import dataset, layout

    output = layout.output_for(
        params.get("dataset", dataset.DATASET_NAME), params.get("schema", "tfds")
    )

    archives = sorted(arguments["verified"]["archives"], key=lambda a: a["path"])
    return OperatorLineage(
        inputs=[archive_input(a, read_in_this_task=False) for a in archives],
        outputs=[
            split_output(
                result["version_dir"],
                split,
                info,
                file_format=params["file_format"],
                reprocessed=bool(result["reprocessed"]),
                output=output,
            )
            for split, info in sorted(result["splits"].items())
        ],
    )
