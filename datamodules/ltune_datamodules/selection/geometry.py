"""Set-level selectors over embeddings: k-means (Cherry's pre-experience clusters, scikit-learn), and, vectorised in
torch, the Repr Filter (DEITA) and k-center greedy (MoDS).

Each works on a ``[N, D]`` float tensor, is seeded, and is exact (no approximate neighbours). The Repr Filter and
k-center greedy run on any device (``benchmarks/selection.py`` measures them); k-means runs on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def kmeans(
    x: Tensor, k: int, seed: int = 0, n_init: int = 1, max_iter: int = 300, tol: float = 1e-4
) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means with k-means++ seeding: ``sklearn.cluster.KMeans`` on the CPU, in float32.

    Cherry's ``data_by_cluster.py`` calls ``KMeans(n_clusters=100, random_state=0)``; its scikit-learn of 2023
    defaulted to ``n_init=10``, today's to ``"auto"`` (one k-means++ start). ``n_init`` is explicit here (1 by default:
    the clusters only group the rows before the per-cluster perplexity band is sampled).

    Args:
        x: ``[N, D]`` points.
        k: Number of clusters (clipped to N).
        seed: ``random_state`` of the k-means++ draws.
        n_init: k-means++ starts; the run with the lowest inertia is kept.
        max_iter: Lloyd iterations at most.
        tol: Stop when the centres move less than ``tol`` x the mean per-feature variance (scikit-learn's rule).

    Returns:
        ``labels`` ``[N]`` (int64, on the CPU) and ``centers`` ``[k, D]`` (float32, on ``x``'s device).
    """
    from sklearn.cluster import KMeans

    points = x.detach().to("cpu", torch.float32).numpy()
    km = KMeans(
        n_clusters=min(k, len(points)), init="k-means++", n_init=n_init, max_iter=max_iter, tol=tol, random_state=seed
    ).fit(points)
    labels = torch.from_numpy(km.labels_.astype(np.int64))
    return labels, torch.from_numpy(np.ascontiguousarray(km.cluster_centers_, dtype=np.float32)).to(x.device)


def repr_filter(x: Tensor, order: Tensor, k: int, tau: float = 0.9, chunk: int = 1024) -> Tensor:
    """DEITA's Repr Filter (Liu et al., ICLR 2024; ``filter/base.py``): walk the rows in ``order`` and keep a row only
    if its cosine similarity to every row kept so far is <= ``tau``, until ``k`` rows are kept.

    Exact and batched: each chunk of candidates is compared with the kept set in one matrix product, and with the
    earlier candidates of its own chunk through one ``[chunk, chunk]`` similarity matrix; the greedy decision inside
    the chunk then runs over that matrix, so the result equals the one-row-at-a-time loop.

    Args:
        x: ``[N, D]`` embeddings (normalised here).
        order: ``[N]`` candidate order (score-descending in DEITA).
        k: Rows to keep at most.
        tau: Cosine-similarity ceiling (0.9): a row is rejected when any similarity is > tau.
        chunk: Candidates per matrix product.

    Returns:
        Indices of the kept rows, in the order they were kept.
    """
    x = torch.nn.functional.normalize(x.float(), dim=1)
    kept = torch.empty(min(k, len(order)), x.shape[1], device=x.device, dtype=x.dtype)
    out: list[int] = []
    for s in range(0, len(order), chunk):
        if len(out) >= k:
            break
        idx = order[s : s + chunk]
        c = x[idx]
        alive = (c @ kept[: len(out)].T).amax(1) <= tau if out else torch.ones(len(idx), dtype=torch.bool)
        inner = (c @ c.T > tau).cpu().numpy()
        alive = alive.cpu().numpy().copy()
        acc: list[int] = []
        for j in range(len(idx)):
            if alive[j] and not inner[j, acc].any():
                acc.append(j)
                if len(out) + len(acc) >= k:
                    break
        if acc:
            kept[len(out) : len(out) + len(acc)] = c[acc]
            out.extend(int(i) for i in idx[acc])
    return torch.tensor(out, dtype=torch.long)


def k_center_greedy(x: Tensor, k: int, seed: int = 0, centers: Tensor | None = None) -> Tensor:
    """k-center greedy (Sener & Savarese, 2018; MoDS ``kcenter_greedy.py``) with Euclidean distance.

    The first centre is a seeded uniform draw (unless ``centers`` are given); every next centre is the point whose
    distance to its nearest centre is largest. Each iteration reads ``x`` once: the squared distances to the new
    centre are ``|x|^2 - 2 x·c + |c|^2`` (one matrix-vector product), folded into the running minimum in place.

    Args:
        x: ``[N, D]`` points (float32 keeps the pass memory-bound; float64 for references).
        k: Centres to choose (clipped to N).
        seed: Seed of the first centre.
        centers: Indices already chosen (e.g. a seed set): new centres extend them.

    Returns:
        ``[k]`` indices of the new centres, in the order chosen.
    """
    n = x.shape[0]
    k = min(k, n - (0 if centers is None else len(centers)))
    sq = (x * x).sum(1)
    min_d = torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
    out = torch.empty(k, dtype=torch.long)
    if centers is not None and len(centers):
        for c in centers.tolist():
            torch.minimum(min_d, (sq - 2 * (x @ x[c]) + sq[c]).clamp_min_(0), out=min_d)
        min_d[centers] = -1.0
    for i in range(k):
        if i == 0 and (centers is None or not len(centers)):
            nxt = int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(seed)))
        else:
            nxt = int(min_d.argmax())
        out[i] = nxt
        torch.minimum(min_d, (sq - 2 * (x @ x[nxt]) + sq[nxt]).clamp_min_(0), out=min_d)
        min_d[nxt] = -1.0  # chosen: never again (distance 0 up to rounding)
    return out
