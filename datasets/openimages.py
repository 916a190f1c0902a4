from bench.dataset import MetadataDataset
from bench.registry import register_dataset


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
    are 8-bit PNGs of the image's size, foreground > 127."""

    name = "openimages"
    image_dir = meta_name = "OpenImages"
    annotation = "mask"
    primary_metric = "PxAP"
    metrics = ("Top-1 Cls",)
    num_classes = 100
    eval_size = 224
    published_counts = {"train": 29819, "val": 2500, "test": 5000}
