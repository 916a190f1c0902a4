from bench.dataset import MetadataDataset, PaperSchedule, register_dataset


@register_dataset
class OpenImages(MetadataDataset):
    """OpenImages30k: 100 classes, instance masks with ignore masks (PxAP at 224x224).

    Layout under --data-root DIR:
      DIR/OpenImages/{train,val,test}/<class>/<image>.jpg    images
      DIR/OpenImages/...                                     mask and ignore PNGs (anywhere below)
      DIR/metadata/OpenImages/{train,val,test}/  image_ids.txt, class_labels.txt, image_sizes.txt
                         (may be empty), localization.txt (`<path>,<mask.png>,<ignore.png>`, one
                         line per instance mask, the ignore mask on the first line of an image)
    All paths in the metadata files (images and masks) are relative to DIR/OpenImages/. Masks
    are grey PNGs (any size: each is resized to 224x224), any non-zero pixel foreground."""

    name = "openimages"
    image_dir = meta_name = "OpenImages"
    annotation = "mask"
    primary_metric = "PxAP"
    metrics = ("Top-1 Cls",)
    num_classes = 100
    eval_size = 224
    published_counts = {"train": 29819, "val": 2500, "test": 5000}
    # `paper` budget. CAM classifier: the example run of clovaai/wsolevaluation README.md, VGG16 for
    # 10 epochs at lr 0.00227913316, weight decay 5e-4, lr x0.1 (main.py) every 3 epochs; main.py
    # decays before epochs 3, 6, 9 (counted from 1), one epoch before this step decay does. Other
    # backbones' learning rates and the decoders' (F-CAM) settings: not found (the budget's).
    paper_stage1 = PaperSchedule(epochs=10, step_every=3, gamma=0.1, lr={"vgg16": 0.00227913316},
                                 weight_decay={"vgg16": 5e-4})
