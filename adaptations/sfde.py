from dataclasses import dataclass

import torch

from bench.transfer import Adaptation, adapt_loop, freeze_hypothesis, register_adaptation
from bench.transfer.features import anchor_clustering, pooled


@dataclass(frozen=True)
class SFDEConfig:
    weight: float = 0.01  # weight of the CDD alignment
    keep_fraction: float = 1.0  # per pseudo-class, the fraction nearest to its centre used
    min_per_class: int = 5  # a pseudo-class with fewer kept images gets no surrogate distribution
    variance: float = 1.0  # multiplier of the surrogate source standard deviations
    kernel_num: tuple[int, ...] = (5, 5)  # Gaussian kernels per CDD layer (features, probabilities)
    kernel_mul: tuple[float, ...] = (2.0, 2.0)  # ratio between successive kernel bandwidths


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


@register_adaptation
class SFDE(Adaptation):
    """SFDE (Ding et al., CVPR 2022), source-free distribution estimation: the source feature
    distribution of each class is estimated as a diagonal Gaussian whose mean points along the
    frozen classifier's class weight (the anchor) with the norm of the target class mean, and
    whose spread is the target class's; target pseudo-labels come from spherical k-means
    started at the anchors. The encoder is trained to align target features with samples of
    the surrogate source by the contrastive domain discrepancy (CDD: class-wise multi-kernel
    MMD, intra-class minus inter-class) on features and on predicted probabilities."""

    name = "sfde"
    Config = SFDEConfig

    @staticmethod
    def surrogate(feats: torch.Tensor, labels: torch.Tensor, kept: torch.Tensor, anchors: torch.Tensor,
                  variance: float = 1.0) -> dict[int, torch.distributions.Normal]:
        """Per class with kept images: N(anchor_c / |anchor_c| * |mean_c|, std_c * variance)."""
        out = {}
        for c in range(anchors.shape[0]):
            members = feats[kept & (labels == c)]
            if members.shape[0] < 2:
                continue
            std, mean = torch.std_mean(members, dim=0, unbiased=True)
            norm = mean.norm()
            if norm < 1e-3:
                continue
            std = torch.where(std > 0, std, torch.full_like(std, 1e-4)) * variance
            out[c] = torch.distributions.Normal(anchors[c] / anchors[c].norm() * norm, std)
        return out

    @staticmethod
    def cdd(source_layers: list[torch.Tensor], target_layers: list[torch.Tensor], source_counts: list[int],
            target_counts: list[int], kernel_num=(5, 5), kernel_mul=(2.0, 2.0)) -> torch.Tensor:
        """CDD between class-sorted source and target rows (counts per class, same classes):
        per class pair, the kernel bandwidth is the mean squared distance over that pair's
        source, target and cross blocks; kernels gamma * mul^(i - num//2), i < num, summed
        over layers; MMD[cs, ct]; intra = mean of the diagonal, inter = mean off the diagonal;
        returns intra - inter (intra alone with one class)."""
        n = len(source_counts)
        so = [0, *torch.tensor(source_counts).cumsum(0).tolist()]
        to = [0, *torch.tensor(target_counts).cumsum(0).tolist()]
        kss = torch.zeros(n, n, device=source_layers[0].device)
        ktt = torch.zeros_like(kss)
        kst = torch.zeros_like(kss)
        for s_feat, t_feat, num, mul in zip(source_layers, target_layers, kernel_num, kernel_mul):
            dss, dtt, dst = _sq_dists(s_feat, s_feat), _sq_dists(t_feat, t_feat), _sq_dists(s_feat, t_feat)
            for i in range(n):
                for j in range(n):
                    ss = dss[so[i]:so[i + 1], so[i]:so[i + 1]]
                    tt = dtt[to[j]:to[j + 1], to[j]:to[j + 1]]
                    st = dst[so[i]:so[i + 1], to[j]:to[j + 1]]
                    ns, nt = ss.shape[0], tt.shape[0]
                    pairs = ns * ns + nt * nt + 2 * ns * nt - ns - nt
                    gamma = ((ss.sum() + tt.sum() + 2 * st.sum()) / max(pairs, 1)).detach().clamp_min(1e-5)
                    base = gamma / mul ** (num // 2)
                    gammas = [base * mul ** g for g in range(num)]

                    def kern(d):
                        return sum(torch.exp(-(d / g).clamp(1e-5, 1e5)) for g in gammas)

                    kss[i, j] = kss[i, j] + kern(ss).mean()
                    ktt[i, j] = ktt[i, j] + kern(tt).mean()
                    kst[i, j] = kst[i, j] + kern(st).mean()
        mmd = kss + ktt - 2 * kst
        intra = torch.diagonal(mmd).mean()
        if n == 1:
            return intra
        inter = (mmd.sum() - torch.diagonal(mmd).sum()) / (n * (n - 1))
        return intra - inter

    def adapt(self, model, target_train, ctx):
        cfg = self.cfg
        freeze_hypothesis(model)
        eval_loader = ctx.loader(target_train, shuffle=False)
        state = {}

        def refresh(epoch):
            feats, labels, kept = anchor_clustering(model, eval_loader, len(target_train), ctx.device,
                                                    cfg.keep_fraction, cfg.min_per_class)
            state.update(labels=labels, kept=kept, sampler=self.surrogate(
                feats, labels, kept, model.classifier.weight.detach(), cfg.variance))

        def step(model, images, index, progress):
            kept = state["kept"][index]
            labels = state["labels"][index]
            classes = [c for c in state["sampler"] if bool((kept & (labels == c)).any())]
            if len(classes) < 2:  # as the reference: CDD needs both sides of every class pair
                return torch.zeros((), device=images.device)
            feats, _ = pooled(model, images)
            t_rows, s_rows, counts = [], [], []
            for c in classes:
                rows = feats[kept & (labels == c)]
                t_rows.append(rows)
                s_rows.append(state["sampler"][c].sample((rows.shape[0],)).to(feats.device))
                counts.append(rows.shape[0])
            t_feat, s_feat = torch.cat(t_rows), torch.cat(s_rows)
            head = model.classifier
            loss = self.cdd([s_feat, head(s_feat).softmax(1)], [t_feat, head(t_feat).softmax(1)], counts, counts,
                            cfg.kernel_num, cfg.kernel_mul)
            return cfg.weight * loss

        adapt_loop(model, target_train, ctx, step, before_epoch=refresh, desc=f"sfde {ctx.source}->{ctx.target}")
        return model
