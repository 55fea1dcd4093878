"""Every conversion setting, once: its type, allowed values, default and help text.

Standard library only, so the DAG builds its trigger form from this table at parse time
without importing TensorFlow or Beam. The same table gives the command line its flags
(`add_arguments`), validates values from either front door (`Settings.from_mapping`),
turns them back into flags for the Beam launcher (`Settings.to_flags`), records them in
lineage (`Settings.lineage`) and says which of them shape the output (`fingerprint_fields`).
Adding a setting is one entry here plus the code that acts on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from imagenet_beam import dataset, layout

TFRECORD = "tfrecord"
ARRAY_RECORD = "array_record"
FILE_FORMATS = (TFRECORD, ARRAY_RECORD)  # each is one class in formats/
# The input layouts, each one module in sources/ (its `SOURCES` table has these names).
LAYOUTS = ("tarballs", "imagefolder", "kaggle", "huggingface")
# What is written: TFDS's datasets (imagenet2012 and its siblings from the same archives),
# each in TFDS's example schema, or imagenet2012 in the classic TF/TPU schema.
DATASETS = tuple(layout.TFDS_OUTPUTS)
TFDS_SCHEMA = "tfds"
CLASSIC_SCHEMA = "classic"
SCHEMAS = (TFDS_SCHEMA, CLASSIC_SCHEMA)
ON_CORRUPT_FAIL = "fail"
ON_CORRUPT_SKIP = "skip"
ON_CORRUPT_POLICIES = (ON_CORRUPT_FAIL, ON_CORRUPT_SKIP)
# Same bound as Pillow's decompression-bomb warning: ~89.5 megapixels. Pillow itself
# refuses to open anything beyond twice that, so that is as high as max_pixels can go.
DEFAULT_MAX_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)
MAX_PIXELS_CEILING = 2 * DEFAULT_MAX_PIXELS
RESIZE_PATTERN = r"^(shorter|max):[1-9][0-9]*$"

# Sections of the DAG's trigger form.
INPUT = "Input and output"
CONVERSION = "Conversion"
EXECUTION = "Execution"


class SettingsError(ValueError):
    """A setting with a value it cannot have; the message names the flag and what to give."""


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str  # the flag (--name), the DAG param and the lineage key
    kind: str  # "str", "int", "bool" or "splits" (a list of split names)
    default: Any
    title: str
    help: str
    section: str = CONVERSION
    choices: tuple[str, ...] | None = None
    pattern: str | None = None
    minimum: int | None = None
    maximum: int | None = None
    nullable: bool = False  # None (empty in the form) is allowed and means the default rule
    required: bool = False
    aliases: tuple[str, ...] = ()  # older names, still accepted as flags and in a DAG's conf
    shapes_output: bool = False  # part of the up-to-date fingerprint
    in_lineage: bool = True
    in_form: bool = True  # a param of the DAG's trigger form
    internal: bool = False  # between the DAG and its Beam launcher; not in help or form

    def check(self, value: Any) -> Any:
        """The value normalised, or a SettingsError saying what is wrong."""
        flag = f"--{self.name}"
        if value is None or (value == "" and self.kind == "str"):
            if self.required:
                raise SettingsError(f"{flag} is required")
            if self.kind == "bool":
                return bool(self.default)
            return None if self.nullable or self.default is None else self.default
        if self.kind == "bool":
            return _boolean(value, flag)
        if self.kind == "int":
            if isinstance(value, bool):
                raise SettingsError(f"{flag}={value}: give a whole number")
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise SettingsError(f"{flag}={value}: give a whole number") from None
            if self.minimum is not None and value < self.minimum or (
                self.maximum is not None and value > self.maximum
            ):
                bounds = f"from {self.minimum}" + (
                    f" to {self.maximum}" if self.maximum is not None else " up"
                )
                raise SettingsError(f"{flag}={value}: give a number {bounds}")
            return value
        if self.kind == "splits":
            return _splits(value, flag)
        value = str(value)
        if self.choices and value not in self.choices:
            raise SettingsError(f"{flag}={value}: choose one of {', '.join(self.choices)}")
        if self.pattern and not re.fullmatch(self.pattern.strip("^$"), value):
            raise SettingsError(f"{flag}={value}: {self.help}")
        return value

    def json_schema(self) -> dict[str, Any]:
        """The keyword arguments of this setting's Airflow `Param` (a JSON schema)."""
        base = {"str": "string", "int": "integer", "bool": "boolean", "splits": "array"}[self.kind]
        schema: dict[str, Any] = {
            "type": ["null", base] if self.nullable else base,
            "title": self.title,
            "description": self.help,
            "section": self.section,
        }
        if self.kind == "splits":
            # `examples` makes Airflow's trigger form a multi-select of these (an array
            # without it is a free-text box, one value a line); `items` validates.
            schema.update(
                items={"type": "string", "enum": list(dataset.SPLITS)}, minItems=1,
                uniqueItems=True, examples=list(dataset.SPLITS),
            )
        if self.choices:
            schema["enum"] = list(self.choices) + ([None] if self.nullable else [])
        if self.pattern:
            schema["pattern"] = self.pattern
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.required and base == "string":
            schema["minLength"] = 1
        return schema


def _boolean(value: Any, flag: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise SettingsError(f"{flag}={value}: give true or false")


def _splits(value: Any, flag: str) -> list[str]:
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [str(n).strip() for n in names if str(n).strip()]
    unknown = sorted(set(names) - set(dataset.SPLITS))
    if unknown or not names:
        raise SettingsError(
            f"{flag}={','.join(names)} is not a list of {', '.join(dataset.SPLITS)}"
        )
    return [s for s in dataset.SPLITS if s in names]


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "manual_dir", "str", None, "Manual directory",
        "Folder (local path or gs://bucket/prefix) holding ImageNet: the archives downloaded "
        "from image-net.org, extracted train/ val/ test/ folders, the Kaggle copy or the "
        "Hugging Face archives (see layout).",
        section=INPUT, required=True,
    ),
    Setting(
        "data_dir", "str", None, "Data directory",
        "TFDS data_dir (local path or gs://): the output goes to DATA_DIR/imagenet2012/5.1.0/.",
        section=INPUT, required=True,
    ),
    Setting(
        "splits", "splits", list(dataset.SPLITS), "Splits",
        "Which splits to convert (train, validation, test); each needs only its own archive.",
        section=INPUT, shapes_output=True,
    ),
    Setting(
        "test_patch", "str", None, "Test patch file",
        f"File name of the October 2019 test patch tar in the manual directory, merged into "
        f"{dataset.TEST_ARCHIVE_2012} before conversion. Not needed when the patched "
        f"{dataset.TEST_ARCHIVE_PATCHED} is there. Empty: take {dataset.TEST_ARCHIVE_2012} as "
        "already patched (what TFDS assumes).",
        # Not part of the fingerprint: which archives were read (the patch among them when
        # it was merged) is, by their checksums.
        section=INPUT, nullable=True,
    ),
    Setting(
        "patch_additions", "bool", False, "Patch may add test images",
        "Let the test patch add images that the 2012 test tar does not have (they are "
        "listed in lineage.json). Off: a patch member that replaces nothing fails the merge.",
        section=INPUT, shapes_output=True,
    ),
    Setting(
        "test_archive", "str", None, "Test archive",
        f"File name (or full path) of the test tar to convert; default: "
        f"{dataset.TEST_ARCHIVE_PATCHED} when present, else {dataset.TEST_ARCHIVE_2012}.",
        section=INPUT, nullable=True, in_form=False, in_lineage=False,  # inputs has it
    ),
    Setting(
        "layout", "str", None, "Input layout",
        "How manual_dir holds ImageNet: tarballs (the archives from image-net.org), "
        "imagefolder (extracted train/, val/ or validation/, test/ folders), kaggle (the "
        "Kaggle ImageNet Object Localization Challenge copy, extracted or as its .tar.gz), "
        "huggingface (the imagenet-1k train_images_*.tar.gz, val_images.tar.gz, "
        "test_images.tar.gz). Empty: recognised from what is there, split by split. Every "
        "layout gives the same shards.",
        # Not part of the fingerprint: the inputs' checks are, and every layout of the
        # same images gives the same output.
        section=INPUT, choices=LAYOUTS, nullable=True,
    ),
    Setting(
        "trust_layout_labels", "bool", False, "Trust the layout's validation labels",
        "Where the layout labels a validation image itself (its class folder, Kaggle's "
        "LOC_val_solution.csv, Hugging Face's wnid suffix) and that label differs from "
        "TFDS's: take the layout's and list the image in lineage.json. Off: such an image "
        "fails the run, naming it and both labels.",
        section=INPUT, shapes_output=True,
    ),
    Setting(
        "verify_checksums", "bool", True, "Verify checksums",
        "Compare archive sizes and sha256 with the values image-net.org publishes (every "
        "archive is read to its end either way); for extracted folders, which have no "
        "published checksum, check full ILSVRC 2012's counts (split totals, 732 to 1,300 "
        "train and 50 validation images a class). Turn off for subsets, custom or generated "
        "data.",
        section=INPUT,
    ),
    Setting(
        "dataset", "str", dataset.DATASET_NAME, "Dataset",
        "Which TFDS dataset to write from the archives: imagenet2012; "
        "imagenet2012_subset/1pct or /10pct (train limited to SimCLR's 1percent.txt or "
        "10percent.txt, put in manual_dir; validation whole); imagenet2012_real (validation "
        "with the ReaL labels of real.json, put in manual_dir). Each goes to its own "
        "DATA_DIR/<name>/[<config>/]<version>/ as TFDS lays it out.",
        section=INPUT, choices=DATASETS, shapes_output=True,
    ),
    Setting(
        "schema", "str", TFDS_SCHEMA, "Example schema",
        "tfds: TFDS's features (tfds.load reads it). classic: the format of the classic "
        "TensorFlow converters that the TPU ResNet, the TF Model Garden and MLPerf read "
        "(image/encoded, image/class/label 1-1000, boxes; train-00000-of-01024 ...), into "
        "DATA_DIR/imagenet2012_classic/1.0.0/; train and validation, TFRecord only.",
        choices=SCHEMAS, shapes_output=True,
    ),
    Setting(
        "file_format", "str", TFRECORD, "File format",
        "Shard format: tfrecord (tfds.load / as_dataset) or array_record (as_data_source, "
        "random access).",
        choices=FILE_FORMATS, shapes_output=True,
    ),
    Setting(
        "tfrecord_index", "bool", False, "DALI index files",
        "With tfrecord: write <shard>.idx beside every shard, the index NVIDIA DALI's "
        "TFRecord reader needs (fn.readers.tfrecord's index_path; one 'offset size' line per "
        "record, as DALI's tfrecord2idx writes), listed in lineage.json and checked by "
        "verify. Not with array_record, whose shards hold their own index.",
        shapes_output=True,
    ),
    Setting(
        "num_shards", "int", None, "Shards per split",
        "Shards per split. Empty: TFDS's rule (64 MiB – 1 GiB a shard, 1024 for train).",
        minimum=1, nullable=True, shapes_output=True,
    ),
    Setting(
        "on_corrupt", "str", ON_CORRUPT_FAIL, "Corrupt images",
        "A member that is not a usable image: fail the run, or skip it and list it in "
        "lineage.json.",
        choices=ON_CORRUPT_POLICIES, shapes_output=True,
    ),
    Setting(
        "decode_images", "bool", False, "Decode every image",
        "Decode all of every image's compressed data (about 1 ms each) instead of checking "
        "headers and JPEG completeness.",
        aliases=("validate", "validate_images"), shapes_output=True,
    ),
    Setting(
        "resize", "str", None, "Resize",
        "Empty: keep every image's bytes (as TFDS). shorter:N or max:N: re-encode every image "
        "scaled down so that its shorter (or longer) side is at most N pixels.",
        pattern=RESIZE_PATTERN, nullable=True, shapes_output=True,
    ),
    Setting(
        "max_pixels", "int", DEFAULT_MAX_PIXELS, "Largest image (pixels)",
        "Images claiming more pixels than this are treated as corrupt (default: Pillow's "
        "decompression-bomb limit).",
        minimum=1, maximum=MAX_PIXELS_CEILING, shapes_output=True,
    ),
    Setting(
        "force", "bool", False, "Convert even if up to date",
        "Convert again even when the published version was made from the same archives and "
        "settings and still verifies.",
        section=EXECUTION, in_lineage=False,
    ),
    Setting(
        "overwrite", "bool", False, "Replace a different version",
        "Replace a published version made from other archives or settings (or by another "
        "tool) instead of refusing.",
        section=EXECUTION, in_lineage=False, in_form=False,
    ),
    Setting(
        "stage_only", "bool", False, "Stage only",
        "Write only the requested splits into the staging directory and publish nothing; "
        "`python -m imagenet_beam publish` does that.",
        in_lineage=False, in_form=False, internal=True,
    ),
    Setting(
        "run_id", "str", None, "Run",
        "Who stages: publish takes only splits staged by the same run (the DAG's run id, "
        "or one the command line makes).",
        nullable=True, in_lineage=False, in_form=False, internal=True,
    ),
    Setting(
        "staging_dir", "str", None, "Staging directory",
        "Where shards are written before they become visible; default: "
        "DATA_DIR/imagenet2012/.5.1.0.incomplete.",
        nullable=True, in_lineage=False, in_form=False, internal=True,
    ),
)
BY_NAME = {s.name: s for s in SETTINGS}
_ALIASES = {alias: s.name for s in SETTINGS for alias in s.aliases}


def _combined(values: dict[str, Any]) -> dict[str, Any]:
    """Settings that depend on each other: refused together, or the splits narrowed to
    the ones the output has (imagenet2012_real has only validation)."""
    if values["tfrecord_index"] and values["file_format"] != TFRECORD:
        raise SettingsError(
            f"--tfrecord_index indexes TFRecord shards for NVIDIA DALI, but "
            f"--file_format={values['file_format']} writes none (ArrayRecord shards hold "
            "their own index: read them with Grain's ArrayRecordDataSource); drop "
            "--tfrecord_index or choose --file_format=tfrecord"
        )
    if values["schema"] == CLASSIC_SCHEMA:
        if values["dataset"] != dataset.DATASET_NAME:
            raise SettingsError(
                f"--schema=classic writes {dataset.DATASET_NAME} only, not "
                f"--dataset={values['dataset']}: drop one of the two"
            )
        if values["file_format"] != TFRECORD:
            raise SettingsError(
                "--schema=classic is TFRecord (what its readers read): drop "
                f"--file_format={values['file_format']}"
            )
    output = layout.output_for(values["dataset"], values["schema"])
    if values["splits"] is not None:
        kept = [s for s in values["splits"] if s in output.splits]
        if not kept:
            raise SettingsError(
                f"--splits={','.join(values['splits'])}: {output.key} has only "
                f"{', '.join(output.splits)}"
            )
        values["splits"] = kept
    return values


class Settings:
    """One conversion's settings, validated; read them as attributes (`settings.file_format`)."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]):
        object.__setattr__(self, "_values", dict(values))

    @classmethod
    def from_mapping(cls, given: Mapping[str, Any], *, strict: bool = False) -> Settings:
        """From a DAG run's params or parsed flags. Older names (`validate_images`) are
        taken: a DAG run's params hold every current name at its default, so an older
        name's value counts unless the current name's differs from the default. Keys that
        are no setting (the DAG's execution params) are ignored unless strict."""
        if strict:
            for key in given:
                if _ALIASES.get(key, key) not in BY_NAME:
                    raise SettingsError(f"--{key} is not a setting of the conversion")
        values = {key: value for key, value in given.items() if key in BY_NAME}
        for key, value in given.items():
            name = _ALIASES.get(key)
            if name and values.get(name, BY_NAME[name].default) == BY_NAME[name].default:
                values[name] = value
        return cls(_combined({s.name: s.check(values.get(s.name)) for s in SETTINGS}))

    def __reduce__(self):
        return (Settings, (self._values,))

    def __getattr__(self, name: str) -> Any:
        if name == "_values":
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Settings are read-only; use replace()")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and self._values == other._values

    def __repr__(self) -> str:
        return f"Settings({self._values!r})"

    def replace(self, **changes: Any) -> Settings:
        return Settings.from_mapping({**self._values, **changes}, strict=True)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def to_flags(self) -> list[str]:
        """Command-line flags that give these settings back (for the Beam launcher)."""
        flags = []
        for s in SETTINGS:
            value = self._values[s.name]
            if value is None or (s.kind == "bool" and value == s.default):
                continue
            if s.kind == "splits":
                value = ",".join(value)
            elif s.kind == "bool":
                value = "true" if value else "false"
            flags.append(f"--{s.name}={value}")
        return flags

    def lineage(self) -> dict[str, Any]:
        """What lineage.json records of the settings."""
        return {s.name: self._values[s.name] for s in SETTINGS if s.in_lineage}

    def fingerprint_fields(self) -> dict[str, Any]:
        """The settings that shape the output, as the up-to-date fingerprint takes them."""
        return {s.name: self._values[s.name] for s in SETTINGS if s.shapes_output}


def parse_bool(text: str) -> bool:
    """A boolean flag's value: true/false (also 1/0, yes/no, on/off)."""
    try:
        return _boolean(text, "flag")
    except SettingsError:
        raise argparse.ArgumentTypeError(f"{text!r}: give true or false") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command line's flags, one per setting (older names as aliases). Values are
    typed as Beam records them; `Settings.from_mapping` checks ranges and choices."""
    for s in SETTINGS:
        names = [f"--{s.name}", *(f"--{a}" for a in s.aliases)]
        help_text = argparse.SUPPRESS if s.internal else s.help
        if s.kind == "bool":
            # --flag, --flag=true or --flag=false
            parser.add_argument(
                *names, dest=s.name, nargs="?", const=True, default=None, type=parse_bool,
                help=help_text, metavar="true|false",
            )
        else:
            kind = int if s.kind == "int" else str
            parser.add_argument(*names, dest=s.name, default=None, type=kind, help=help_text)


def form_params(defaults: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """name → (default, JSON schema) of every setting in the DAG's trigger form.

    `defaults` lets the deployment choose defaults (folders, the patch's file name) without
    restating a setting's type or choices.
    """
    defaults = dict(defaults or {})
    params = {}
    for s in SETTINGS:
        if not s.in_form:
            continue
        default = defaults.pop(s.name, s.default)
        params[s.name] = {"default": default, **s.json_schema()}
    if defaults:
        raise SettingsError(f"no such settings in the form: {', '.join(sorted(defaults))}")
    return params
