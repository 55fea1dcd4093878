"""Member descriptors as the pipeline's steps pass them: Arrow tables, in Arrow IPC files.

An index step writes its work item's members to a file; the plan step reads a split's every
index file, sorts the members by TFDS key and writes each shard's members to a file; a
shard's writer reads its own. At ImageNet's 1.28 million train images the plan is one pass
over the whole split, so it works on columns: reading, sorting and cutting train takes
about a second (as JSON rows it took ~7 s, the only step that runs on one core).

Columns (`COLUMNS`): the TFDS key (md5, 16 bytes, which sort as TFDS's 128-bit integer keys
do), the archive (a number into the table's archive paths, kept in the file's metadata with
the split), the image's offset and size in it, its file name, its label, and what the
output's schema attached at index time (`MemberRef.extra`, as JSON text; null for none).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from imagenet_beam import plan, storage
from imagenet_beam.sources import MemberRef

KEY, ARCHIVE, OFFSET, SIZE, FILE_NAME, LABEL, EXTRA = (
    "key", "archive", "offset", "size", "file_name", "label", "extra",
)
COLUMNS = pa.schema([
    (KEY, pa.binary(16)),
    (ARCHIVE, pa.int32()),
    (OFFSET, pa.int64()),
    (SIZE, pa.int64()),
    (FILE_NAME, pa.string()),
    (LABEL, pa.int64()),
    (EXTRA, pa.string()),
])
_SPLIT, _ARCHIVES = b"split", b"archives"


class MemberTable:
    """One split's members: `table` (in `COLUMNS`) and the archive paths its `archive`
    column numbers."""

    def __init__(self, split: str, archives: Sequence[str], table: pa.Table):
        self.split = split
        self.archives = list(archives)
        self.table = table

    def __len__(self) -> int:
        return self.table.num_rows

    @classmethod
    def from_refs(cls, split: str, refs: Iterable[MemberRef]) -> MemberTable:
        """refs (all of split), each keyed here: where indexing runs, in parallel."""
        refs = list(refs)
        numbers: dict[str, int] = {}
        columns = {
            KEY: [plan.key_digest(split, r.file_name) for r in refs],
            ARCHIVE: [numbers.setdefault(r.archive, len(numbers)) for r in refs],
            OFFSET: [r.offset for r in refs],
            SIZE: [r.size for r in refs],
            FILE_NAME: [r.file_name for r in refs],
            LABEL: [r.label for r in refs],
            EXTRA: [None if r.extra is None else json.dumps(r.extra) for r in refs],
        }
        return cls(split, list(numbers), pa.Table.from_pydict(columns, schema=COLUMNS))

    def to_refs(self) -> list[MemberRef]:
        """The members as MemberRefs, in the table's order."""
        columns = [self.table[c].to_pylist() for c in (ARCHIVE, OFFSET, SIZE, FILE_NAME, LABEL)]
        extras = self.table[EXTRA]
        paths = self.archives
        if extras.null_count == len(extras):
            return [
                MemberRef(self.split, paths[a], offset, size, name, label)
                for a, offset, size, name, label in zip(*columns, strict=True)
            ]
        return [
            MemberRef(self.split, paths[a], offset, size, name, label,
                      None if extra is None else json.loads(extra))
            for a, offset, size, name, label, extra
            in zip(*columns, extras.to_pylist(), strict=True)
        ]

    @classmethod
    def concat(cls, split: str, tables: Sequence[MemberTable]) -> MemberTable:
        """The tables' members together, their archive numbers made one table's."""
        archives: dict[str, int] = {}
        parts = []
        for t in tables:
            numbers = pa.array([archives.setdefault(a, len(archives)) for a in t.archives],
                               pa.int32())
            column = t.table.schema.get_field_index(ARCHIVE)
            renumbered = pc.take(numbers, t.table[ARCHIVE]) if len(t) else t.table[ARCHIVE]
            parts.append(t.table.set_column(column, COLUMNS.field(ARCHIVE), renumbered))
        table = pa.concat_tables(parts) if parts else COLUMNS.empty_table()
        return cls(split, list(archives), table)

    def sorted_by_key(self) -> MemberTable:
        order = pc.sort_indices(self.table, [(KEY, "ascending")])
        return MemberTable(self.split, self.archives, self.table.take(order).combine_chunks())

    def slice(self, start: int, stop: int) -> MemberTable:
        return MemberTable(self.split, self.archives, self.table.slice(start, stop - start))

    def keys(self) -> list[int]:
        """The TFDS keys, as the integers TFDS compares."""
        return [int.from_bytes(k, "big") for k in self.table[KEY].to_pylist()]

    def repeated_names(self) -> list[str]:
        """Of a table sorted by key: the file names that share a key with the member
        before them (the same file name twice in the split)."""
        keys = self.table[KEY]
        if len(keys) < 2:
            return []
        same = pc.equal(keys.slice(1), keys.slice(0, len(keys) - 1))
        if not pc.any(same).as_py():
            return []
        names = self.table[FILE_NAME].slice(1)
        return sorted(set(pc.filter(names, same).to_pylist()))

    def estimated_bytes(self) -> int:
        """What TFDS's shard count rule is given for these members: each one's image, its
        file name in UTF-8, and the proto framing around them."""
        if not len(self):
            return 0
        sizes = pc.sum(self.table[SIZE]).as_py()
        names = pc.sum(pc.binary_length(self.table[FILE_NAME])).as_py()
        return sizes + names + plan.EXAMPLE_OVERHEAD_BYTES * len(self)

    def to_bytes(self) -> bytes:
        metadata = {_SPLIT: self.split, _ARCHIVES: json.dumps(self.archives)}
        table = self.table.replace_schema_metadata(metadata)
        sink = pa.BufferOutputStream()
        with ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> MemberTable:
        table = ipc.open_file(pa.py_buffer(data)).read_all()
        metadata = table.schema.metadata or {}
        if not table.schema.remove_metadata().equals(COLUMNS):
            raise ValueError(f"not a member table: its columns are {table.schema.names}")
        split = metadata[_SPLIT].decode("utf-8")
        archives = json.loads(metadata[_ARCHIVES])
        return cls(split, archives, table.replace_schema_metadata(None))


def write(path: str, members: MemberTable) -> None:
    storage.write_bytes(path, members.to_bytes())


def read(path: str) -> MemberTable:
    return MemberTable.from_bytes(storage.read_bytes(path))
