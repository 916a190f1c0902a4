from dataclasses import dataclass

from bench.method import PixelSupervised, few_shot_records, register_method

# Choe et al. (CVPR 2020): the fully annotated images per class of "train-fullsup" their few-shot
# baseline trains on
PAPER_SHOTS = {"ilsvrc": 10, "cub": 5, "openimages": 5}


@dataclass(frozen=True)
class FewShotConfig:
    # images per class; 0: the paper's count for its datasets, else 5 (the embedded synthetic
    # sets hold 5 validation images per class by default, as CUB's train-fullsup does)
    shots: int = 0
    default_shots: int = 5

    def __post_init__(self):
        if self.shots < 0 or self.default_shots < 1:
            raise ValueError(f"fewshot: need shots >= 0 and default_shots >= 1, got {self.shots}, "
                             f"{self.default_shots}")


@register_method
class FewShot(PixelSupervised):
    """Few-shot full supervision (Choe et al., CVPR 2020): the fully supervised model trained on
    N pixel/box-labelled images per class of the validation split ("train-fullsup") only; an
    epoch draws as many images as the weak training split holds (the images cycle), so it takes
    as many SGD steps as the weakly supervised baselines."""

    name = "fewshot"
    supervision = "few-shot"
    Config = FewShotConfig

    def shots_for(self, dataset) -> int:
        return self.cfg.shots or PAPER_SHOTS.get(dataset.name, self.cfg.default_shots)

    def supervised_records(self, train_set, val, ctx):
        records = few_shot_records(val.records, self.shots_for(ctx.dataset))
        return records, max(len(train_set), len(records))
