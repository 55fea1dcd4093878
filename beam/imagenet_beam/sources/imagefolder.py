"""ImageNet extracted into folders, as PyTorch's ImageFolder (and most shared file systems)
hold it.

    MANUAL_DIR/train/<wnid>/<wnid>_<n>.JPEG        (or the class tars: train/<wnid>.tar)
    MANUAL_DIR/val/ILSVRC2012_val_<n>.JPEG         (or val/<wnid>/…, as valprep.sh leaves it;
                                                    the folder may be named validation/)
    MANUAL_DIR/test/ILSVRC2012_test_<n>.JPEG

Validation images are labelled by their number, from TFDS's validation labels; their class
folder, where they have one, must agree (see `tree.TreeSource`).
"""

from __future__ import annotations

from imagenet_beam import dataset, storage
from imagenet_beam.sources.tree import TreeSource

SPLIT_FOLDERS = {
    dataset.TRAIN: ("train",),
    dataset.VALIDATION: ("val", "validation"),
    dataset.TEST: ("test",),
}


class ImageFolderSource(TreeSource):
    name = "imagefolder"
    title = "an extracted ImageFolder tree"
    instructions = (
        "For extracted images, point manual_dir at the folder holding train/ (class folders "
        "<wnid>/ of images, or <wnid>.tar class tars), val/ or validation/ (the images flat, "
        "or in <wnid>/ folders as valprep.sh leaves them) and test/ (flat)."
    )

    def split_folders(self, manual_dir: str, split: str) -> list[str]:
        return [storage.join(manual_dir, name) for name in SPLIT_FOLDERS[split]]
