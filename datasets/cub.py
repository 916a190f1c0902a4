from bench.dataset import MetadataDataset, PaperSchedule, register_dataset


@register_dataset
class CUB(MetadataDataset):
    """CUB-200-2011: 200 bird species, boxes (MaxBoxAccV2 at 224x224).

    Layout under --data-root DIR:
      DIR/CUB/<class folder>/<image>.jpg        e.g. CUB/001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg
      DIR/metadata/CUB/{train,val,test}/         image_ids.txt, class_labels.txt, image_sizes.txt,
                                                 localization.txt (`<path>,x0,y0,x1,y1`)
    Paths in the metadata files are relative to DIR/CUB/. `val` is the few-shot fully
    supervised split (5 images per class)."""

    name = "cub"
    image_dir = meta_name = "CUB"
    annotation = "box"
    primary_metric = "MaxBoxAccV2"
    metrics = ("MaxBoxAcc", "Top-1 Loc", "Top-1 Cls")
    num_classes = 200
    eval_size = 224
    published_counts = {"train": 5994, "val": 1000, "test": 5794}
    # `paper` budget. CAM classifier: 50 epochs, lr x0.1 every 15, ResNet50 at lr 0.0017, F-CAM's
    # decoder: 50 epochs at lr 0.01 with a step of 1000 epochs (never reached), both from the
    # commands of sbelharbi/fcam-wsol README.md; weight decay 1e-4 there (the default of
    # dlib/configure/config.py). VGG16 / InceptionV3 learning rates: not found (the budget's).
    paper_stage1 = PaperSchedule(epochs=50, step_every=15, gamma=0.1, lr={"resnet50": 0.0017},
                                 weight_decay={"resnet50": 1e-4})
    paper_method = PaperSchedule(epochs=50, step_every=1000, gamma=0.1, lr={"resnet50": 0.01},
                                 weight_decay={"resnet50": 1e-4})
