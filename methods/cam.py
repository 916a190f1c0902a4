from bench.method import PostHocCAM, register_method


@register_method
class CAM(PostHocCAM):
    """CAM (Zhou et al., CVPR 2016): the class's linear weights times the last feature maps."""

    name = "cam"
    tasks = ("image", "video")  # video: frame-wise, on the classifier trained on frames

    def cams(self, model, images, labels):
        out = model(images)
        return model.cam(out.features, labels), out.logits
