from bench.dataset import MetadataDataset, register_dataset


@register_dataset
class ILSVRC(MetadataDataset):
    """ILSVRC 2012 (ImageNet-1k): 1000 classes, boxes (MaxBoxAccV2 at 224x224).

    Layout under --data-root DIR:
      DIR/ILSVRC/train/<wnid>/<image>.JPEG, DIR/ILSVRC/val/<image>.JPEG   (the official folders)
      DIR/metadata/ILSVRC/{train,val,test}/   image_ids.txt, class_labels.txt, image_sizes.txt,
                                              localization.txt (`<path>,x0,y0,x1,y1`, one line per box)
    Paths in the metadata files are relative to DIR/ILSVRC/. `val` is the few-shot fully
    supervised split (10 images per class, drawn from the training images); `test` is the
    official 50,000-image validation set."""

    name = "ilsvrc"
    image_dir = meta_name = "ILSVRC"
    annotation = "box"
    primary_metric = "MaxBoxAccV2"
    metrics = ("MaxBoxAcc", "Top-1 Loc", "Top-1 Cls")
    num_classes = 1000
    eval_size = 224
    # docs/protocol.md gives train as 1.28M; 1,281,167 is the ILSVRC 2012 training set size.
    published_counts = {"train": 1281167, "val": 10000, "test": 50000}
    # `paper` budget: no published ILSVRC schedule was found (clovaai/wsolevaluation gives its
    # per-backbone settings only in a linked spreadsheet): the budget's generic settings.
