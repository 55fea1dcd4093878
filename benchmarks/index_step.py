"""The listing/index step alone, as the pipeline's IndexArchives does it: each split's work
items listed (`Source.work_items`), then each indexed (`Source.index`: tar headers, or a
class folder's listing), `--workers` at a time as the DirectRunner's workers would.

    python -m benchmarks.index_step --manual_dir DIR [--layout imagefolder] [--workers 2]

Prints one JSON line: images indexed, work items, seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manual_dir", required=True)
    parser.add_argument("--layout", default=None)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    from imagenet_beam import dataset, sources

    started = time.monotonic()
    found, missing = sources.find(args.manual_dir, dataset.SPLITS, layout=args.layout)
    if missing:
        raise SystemExit(missing)
    items = []
    for split, split_input in found.items():
        source = sources.get(split_input.layout)
        items += [(source, item) for item in source.work_items(split, split_input.archive)]
    with ThreadPoolExecutor(args.workers) as pool:
        counts = list(pool.map(lambda si: len(si[0].index(si[1])), items))
    print(json.dumps({"num_images": sum(counts), "work_items": len(items),
                      "seconds": time.monotonic() - started}))


if __name__ == "__main__":
    main()
