from bench.dataset import VideoDataset, register_dataset

YTO_CLASSES = ("aeroplane", "bird", "boat", "car", "cat", "cow", "dog", "horse", "motorbike", "train")


@register_dataset
class YTOv22(VideoDataset):
    """YouTube-Objects v2.2: 10 classes, one class tag per shot, boxes on some frames (CorLoc).

    Layout under --data-root DIR:
      DIR/YouTube-Objects-v2.2/<class>/video-<NNNN>/shot-<NNNNNN>/<NNNNNNNN>.jpg
      DIR/metadata/YouTube-Objects-v2.2/train/   image_ids.txt (shot folders, e.g.
                         horse/video-0014/shot-000139), class_labels.txt (`<shot>,<class id>`)
      DIR/metadata/YouTube-Objects-v2.2/{val,test}/  image_ids.txt (annotated frames),
                         class_labels.txt, image_sizes.txt, localization.txt (`<frame>,x0,y0,x1,y1`,
                         one line per box; coordinates count from 1 and may reach the width)
    Class ids follow the alphabetical class order (aeroplane 0 ... train 9); paths are relative
    to DIR/YouTube-Objects-v2.2/. Splits: the field's (TCAM / CoLo-CAM) train shots, val and
    test frames."""

    name = "ytov22"
    frame_dir = meta_name = "YouTube-Objects-v2.2"
    num_classes = len(YTO_CLASSES)
    class_names = YTO_CLASSES
    # docs/protocol.md ("On-disk format"): 1,289 train shots, 1,177 val frames, 1,781 test frames (2,667 boxes)
    published_counts = {"train": 1289, "val": 1177, "test": 1781}
    # `paper` budget: no published YTOv2.2 schedule was found (sbelharbi/tcam-wsol-video's README
    # has YTOv1 commands only): the budget's generic settings.
