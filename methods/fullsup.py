from bench.method import PixelSupervised, register_method, train_split_records


@register_method
class FullSup(PixelSupervised):
    """Fully supervised upper bound (not a WSOL method): the backbone with a 1x1 conv foreground
    head trained on the training split's pixel labels (masks; boxes filled as masks) plus the
    class cross-entropy; the map is the foreground probability. Needs localization labels on the
    training split (the embedded synthetic sets have them)."""

    name = "fullsup"
    supervision = "full"

    def supervised_records(self, train_set, val, ctx):
        return train_split_records(train_set, ctx), None
