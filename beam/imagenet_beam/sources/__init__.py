"""Input layouts, one module each, found through one table.

Each source (see `base.Source`) says which files a split needs, checks them, lists its work
items, indexes them and reads their images: the tarballs from image-net.org (`tarballs`),
extracted ImageFolder trees (`imagefolder`), the Kaggle copy (`kaggle`) and the Hugging Face
archives (`huggingface`). `find` recognises which of them a manual_dir holds, split by split.
Also here: the archive checks (`archive_checks`), the test-patch merge (`patch_merge`),
what the extracted layouts share (`tree`), and the unpacking of the .tar.gz ones (`packed`).
"""

from __future__ import annotations

from collections.abc import Sequence

from imagenet_beam.sources.base import BySplit, MemberRef, Source, SplitInput, WorkItem
from imagenet_beam.sources.huggingface import HuggingFaceSource
from imagenet_beam.sources.imagefolder import ImageFolderSource
from imagenet_beam.sources.kaggle import KaggleSource
from imagenet_beam.sources.tarballs import TarballSource

SOURCES: dict[str, Source] = {
    s.name: s
    for s in (TarballSource(), ImageFolderSource(), KaggleSource(), HuggingFaceSource())
}
DEFAULT = TarballSource.name


class LayoutError(ValueError):
    """A manual_dir that holds a split in two layouts, or a layout nobody knows."""


def get(name: str = DEFAULT) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise LayoutError(
            f"no input layout {name!r}; known: {', '.join(SOURCES)}"
        ) from None


def accepted() -> str:
    """The layouts, for help texts and messages."""
    return "; ".join(f"{s.name} ({s.title})" for s in SOURCES.values())


def find(
    manual_dir: str,
    splits: Sequence[str],
    *,
    layout: str | None = None,
    test_patch: str | None = None,
    test_archive: str | None = None,
) -> tuple[dict[str, SplitInput], str | None]:
    """(split → its input, None) when every split is found, in one layout each; else
    (what was found, what is missing in the words of the layouts manual_dir looks like,
    each with its instructions). layout: look for that one only (default: every one).
    Raises LayoutError when one split is there in two layouts."""
    candidates = [get(layout)] if layout else list(SOURCES.values())
    looked = [
        (source, *source.find(manual_dir, splits, test_patch, test_archive))
        for source in candidates
    ]
    found: dict[str, SplitInput] = {}
    for split in splits:
        holders = [(source, inputs[split]) for source, inputs, _ in looked if split in inputs]
        if len(holders) > 1:
            what = " and ".join(f"as {s.title} ({i.archive})" for s, i in holders)
            raise LayoutError(
                f"{manual_dir} holds the {split} split twice, {what}: keep one of them there "
                "(move the other out), or choose one with --layout"
            )
        if holders:
            found[split] = holders[0][1]
    lacking = [s for s in splits if s not in found]
    if not lacking:
        return found, None
    # Speak of the layouts manual_dir looks like; of the tarballs when it looks like none.
    seen = [
        (source, missing) for source, inputs, missing in looked
        if inputs or source.present(manual_dir)
    ] or [(source, missing) for source, _, missing in looked if source.name == DEFAULT]
    if not seen:
        seen = [looked[0][::2]]
    messages = []
    for source, missing in seen:
        mine = [line for line in missing if line.split(":", 1)[0] in lacking]
        messages.append(source.missing_message(manual_dir, mine))
    others = [s for s in SOURCES.values() if s not in [src for src, _ in seen]]
    if not layout and others:
        messages.append(
            "Also accepted in manual_dir: " + "; ".join(f"{s.title}" for s in others) + "."
        )
    return found, "\n".join(messages)


__all__ = [
    "DEFAULT", "SOURCES", "BySplit", "LayoutError", "MemberRef", "Source", "SplitInput", "WorkItem",
    "accepted", "find", "get",
]
