"""Input layouts, one module each, found through one table.

Each source (see `base.Source`) says which files a split needs, lists its work items,
indexes them and reads their images. Today: the tarballs from image-net.org.
Also here: the archive checks (`archive_checks`) and the test-patch merge (`patch_merge`).
"""

from __future__ import annotations

from imagenet_beam.sources.base import MemberRef, Source, SplitInput, WorkItem
from imagenet_beam.sources.tarballs import TarballSource

SOURCES: dict[str, Source] = {s.name: s for s in (TarballSource(),)}
DEFAULT = TarballSource.name


def get(name: str = DEFAULT) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"no input layout {name!r}; known: {', '.join(SOURCES)}") from None


__all__ = ["DEFAULT", "SOURCES", "MemberRef", "Source", "SplitInput", "WorkItem", "get"]
