from bench.dataset import FoldedMetadataDataset, register_dataset


@register_dataset
class Camelyon16(FoldedMetadataDataset):
    """Camelyon16 512x512 patches: normal 0 / tumor 1, tumor masks (PxAP); normal patches are
    fully negative (empty mask field).

    Layout under --data-root DIR (5 folds, `--set camelyon16.fold=K`, default 0):
      DIR/Camelyon16/<...>/<patch>.png and its mask PNG      (any sub-folders)
      DIR/metadata/Camelyon16/fold<K>/{train,valcl,valpx,test}/  image_ids.txt, class_labels.txt,
                         image_sizes.txt (may be empty), localization.txt (`<path>,<mask.png>,` for
                         tumor patches, `<path>,,` for normal ones) on valpx and test
    Paths are relative to DIR/Camelyon16/; any non-zero mask pixel is tumor. CAM methods
    score a normal patch on its own (normal) class map by default, as the seed authors do;
    `--set camelyon16.negative_map=roi` scores it on the tumor map instead."""

    name = "camelyon16"
    image_dir = meta_name = "Camelyon16"
    num_classes = 2
    negative_class = 0
    # docs/protocol.md ("On-disk format"): train ~26.6k (per fold), valcl 6,642, valpx 10, test 15,664
    published_counts = {"train": (26550, 26649), "valcl": 6642, "valpx": 10, "test": 15664}
    # `paper` budget: no published Camelyon16 schedule was found (sbelharbi/negev's README has
    # GlaS commands only): the budget's generic settings.
