"""Feature banks, neighbour searches and clustering shared by the adaptation methods.

Features are the source model's pooled CAM features (global average pooling of
`model.features`, what the linear head reads: SHOT's and NRC's "bottleneck" output here) and
probabilities the head's softmax. Banks stay on the model's device.

Memory: a bank of N images holds N x (D + C) float32 (D feature channels, C classes);
neighbour searches run over query chunks of at most `chunk` rows, so their scratch is
chunk x N float32 (similarities) plus chunk x k indices. With N = 5,000, D = 2,048
(ResNet-50), C = 2 and chunk = 1,024: 41 MB of bank and 20 MB of scratch; the small CNN
(D = 128 .. 256) needs a few MB."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

DEFAULT_CHUNK = 1024


def pooled(model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled features [B,D], logits [B,C]) of a WSOLNet-like model (`features`, `classifier`)."""
    feats = model.features(images).mean(dim=(2, 3))
    return feats, model.classifier(feats)


def entropy(probs: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Shannon entropy (nats) of each row of `probs`."""
    return -(probs * torch.log(probs + eps)).sum(-1)


@torch.no_grad()
def collect(model, loader, size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features [N,D] and softmax probabilities [N,C] of every item of an unlabelled
    loader, row i for item index i; the model in eval mode (BatchNorm running statistics)."""
    was_training = model.training
    model.eval()
    feats = probs = None
    for batch in loader:
        images = batch["image"].to(device)
        index = batch["index"].to(device)
        f, logits = pooled(model, images)
        if feats is None:
            feats = torch.zeros(size, f.shape[1], device=device)
            probs = torch.zeros(size, logits.shape[1], device=device)
        feats[index] = f.float()
        probs[index] = logits.float().softmax(1)
    model.train(was_training)
    return feats, probs


def topk_similar(queries: torch.Tensor, bank: torch.Tensor, k: int, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Indices [Q,k] of the k rows of `bank` with the largest dot product with each query
    (L2-normalised rows: cosine), computed over chunks of `chunk` queries."""
    if k > bank.shape[0]:
        raise ValueError(f"topk_similar: k={k} exceeds the bank's {bank.shape[0]} rows")
    out = []
    for start in range(0, queries.shape[0], chunk):
        sims = queries[start:start + chunk] @ bank.T
        out.append(sims.topk(k, dim=1).indices)
    return torch.cat(out) if out else torch.zeros(0, k, dtype=torch.long, device=bank.device)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """0.5 (1 - cos) between every row of `a` and every row of `b` (in [0, 1])."""
    return 0.5 * (1.0 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).T)


def spherical_kmeans(feats: torch.Tensor, init_centers: torch.Tensor, eps: float = 1e-3, max_iter: int = 100,
                     chunk: int = DEFAULT_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine k-means from `init_centers` [K,D] (SFDE / CDCL: the classifier's weights, the
    source class anchors). Stops when the centres move less than `eps` (mean cosine distance)
    or after `max_iter` rounds; an empty cluster keeps its initial centre. The clusters are
    then matched to the initial centres by the Hungarian algorithm, so cluster k is class k.
    Returns (labels [N], distance to every centre [N,K])."""
    centers = init_centers.float()
    k = centers.shape[0]
    for _ in range(max_iter):
        sums = torch.zeros_like(centers)
        counts = torch.zeros(k, device=feats.device)
        for start in range(0, feats.shape[0], chunk):
            part = feats[start:start + chunk]
            labels = cosine_distance(part, centers).argmin(1)
            sums.index_add_(0, labels, part)
            counts += torch.bincount(labels, minlength=k).float()
        new = torch.where(counts[:, None] > 0, sums, init_centers.float())
        moved = torch.diagonal(cosine_distance(new, centers)).mean().item()
        centers = new
        if moved < eps:
            break
    dist = torch.cat([cosine_distance(feats[s:s + chunk], centers) for s in range(0, feats.shape[0], chunk)])
    labels = dist.argmin(1)
    _, to_class = linear_sum_assignment(cosine_distance(centers, init_centers).cpu().numpy())
    to_class = torch.as_tensor(to_class, device=feats.device)
    order = torch.argsort(to_class)  # column c of the new distances: the cluster matched to class c
    return to_class[labels], dist[:, order]


def keep_nearest(labels: torch.Tensor, dist: torch.Tensor, fraction: float, min_per_class: int = 5) -> torch.Tensor:
    """Boolean mask of the samples kept for training: per pseudo-class, the `fraction` nearest
    to their centre (SFDE / CDCL's threshold; 1.0 keeps all); classes with fewer than
    `min_per_class` kept samples are dropped."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    near = dist.min(1).values
    for c in labels.unique():
        members = (labels == c).nonzero().flatten()
        n = int(fraction * members.numel())
        if n >= min_per_class:
            keep[members[torch.argsort(near[members])[:n]]] = True
    return keep


def anchor_clustering(model, loader, size: int, device, keep_fraction: float = 1.0,
                      min_per_class: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SFDE / CDCL's target pseudo-labels: spherical k-means of the pooled target features
    from the classifier's weights (the source class anchors), Hungarian-matched to them, then
    per class the `keep_fraction` nearest to their centre. Returns (features [N,D],
    labels [N], kept [N] bool)."""
    feats, _ = collect(model, loader, size, device)
    labels, dist = spherical_kmeans(feats, model.classifier.weight.detach())
    return feats, labels, keep_nearest(labels, dist, keep_fraction, min_per_class)
