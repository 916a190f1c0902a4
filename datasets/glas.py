from bench.dataset import FoldedMetadataDataset, PaperSchedule, register_dataset


@register_dataset
class GlaS(FoldedMetadataDataset):
    """GlaS (gland segmentation, colon histology): benign 0 / malignant 1, gland masks (PxAP).

    Layout under --data-root DIR (5 folds, `--set glas.fold=K`, default 0):
      DIR/GlaS/<image>.bmp, DIR/GlaS/<image>_anno.bmp     images and gland annotations
      DIR/metadata/GlaS/fold<K>/{train,valcl,valpx,test}/  image_ids.txt, class_labels.txt,
                         image_sizes.txt (may be empty), localization.txt (`<path>,<mask>,` on
                         valpx and test; train and valcl need only ids and labels)
    Paths are relative to DIR/GlaS/. `valpx` is the protocol's validation split (pixel labels,
    model selection and the CAM threshold); `valcl` is only checked. The `*_anno.bmp` files
    label each gland with its own integer, so any non-zero pixel is foreground."""

    name = "glas"
    image_dir = meta_name = "GlaS"
    num_classes = 2  # benign 0, malignant 1 (both hold glands: no negative class)
    published_counts = {"train": 67, "valcl": 18, "valpx": 6, "test": 80}
    # `paper` budget: the CAM and NEGEV commands of sbelharbi/negev README.md (ResNet50, mixed
    # precision): 1000 epochs, lr x0.1 every 250, CAM at lr 0.003, the NEGEV decoder at lr 0.1;
    # weight decay 1e-4 (the default of dlib/configure/config.py). Other backbones' learning
    # rates: not found (the budget's).
    paper_stage1 = PaperSchedule(epochs=1000, step_every=250, gamma=0.1, lr={"resnet50": 0.003},
                                 weight_decay={"resnet50": 1e-4})
    paper_method = PaperSchedule(epochs=1000, step_every=250, gamma=0.1, lr={"resnet50": 0.1},
                                 weight_decay={"resnet50": 1e-4})
