"""Re-ID plots: the CMC curve and a query with its top-ranked gallery images (green = same identity, red = not)."""
from __future__ import annotations

from typing import Any

import numpy as np

GREEN = (40, 170, 60)
RED = (210, 40, 40)


def plot_cmc(curve: np.ndarray, published: dict[str, float] | None = None, max_rank: int = 20, ax: Any = None,
             title: str = "CMC (Market-1501 protocol)"):
    """CMC curve (fractions) at ranks 1..``max_rank``; ``published`` top1/top5/top10 are drawn as markers."""
    import matplotlib.pyplot as plt

    curve = np.asarray(curve, dtype=np.float64)[:max_rank]
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.6))
    ranks = np.arange(1, len(curve) + 1)
    ax.plot(ranks, 100 * curve, marker="o", ms=3, label="this run")
    if published:
        pts = [(int(k[3:]), v) for k, v in published.items() if k.startswith("top") and k[3:].isdigit()]
        if pts:
            ax.scatter([r for r, _ in pts], [100 * v for _, v in pts], marker="*", s=90, color="tab:red",
                       zorder=3, label="published")
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_xticks(ranks if len(ranks) <= 20 else ranks[::2])
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right")
    return ax.figure


def framed(path: str, color: tuple[int, int, int], width: int = 4, size: tuple[int, int] = (64, 128)) -> np.ndarray:
    """The image at ``path`` resized to ``size`` (W x H) inside a ``width``-pixel border of ``color``: (H+2w, W+2w, 3)."""
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB").resize(size, Image.BILINEAR))
    out = np.empty((size[1] + 2 * width, size[0] + 2 * width, 3), np.uint8)
    out[:] = color
    out[width:width + size[1], width:width + size[0]] = a
    return out


def ranked_gallery(acc: Any, query_index: int, topk: int = 10) -> list[tuple[int, float, bool]]:
    """(gallery index, distance, same identity) of the ``topk`` nearest valid gallery entries of a query, as the
    metric ranks them (entries of the query's identity seen by the query's own camera are left out)."""
    d = acc.distances()[query_index]
    qp, qc = acc.q_pids[query_index], acc.q_camids[query_index]
    gp, gc = np.asarray(acc.g_pids), np.asarray(acc.g_camids)
    order = np.argsort(d)
    order = order[~((gp[order] == qp) & (gc[order] == qc))]
    return [(int(j), float(d[j]), bool(gp[j] == qp)) for j in order[:topk]]


def first_valid_query(acc: Any) -> int:
    """Index of the first query that has a same-identity gallery image from another camera (0 if none)."""
    gp, gc = np.asarray(acc.g_pids), np.asarray(acc.g_camids)
    for i, (p, c) in enumerate(zip(acc.q_pids, acc.q_camids)):
        if np.any((gp == p) & (gc != c)):
            return i
    return 0


def show_query_matches(acc: Any, query_index: int | None = None, topk: int = 10):
    """The query image and its ``topk`` nearest gallery images (left to right), bordered green when they show the
    same person and red otherwise, with rank and distance. ``acc`` is the PCB accumulator after the run."""
    import matplotlib.pyplot as plt

    i = first_valid_query(acc) if query_index is None else query_index
    ranked = ranked_gallery(acc, i, topk)
    fig, axes = plt.subplots(1, 1 + max(len(ranked), 1), figsize=(1.15 * (1 + max(len(ranked), 1)), 2.9),
                             squeeze=False)
    q = acc.query_samples[i]
    axes[0][0].imshow(framed(q.path, (90, 90, 90)))
    axes[0][0].set_title(f"query\npid {acc.q_pids[i]} cam {acc.q_camids[i] + 1}", fontsize=7)
    for rank, (ax, (j, dist, same)) in enumerate(zip(axes[0][1:], ranked), start=1):
        ax.imshow(framed(acc.gallery_samples[j].path, GREEN if same else RED))
        ax.set_title(f"#{rank} d={dist:.3f}\npid {acc.g_pids[j]} cam {acc.g_camids[j] + 1}", fontsize=7)
    for ax in axes[0]:
        ax.axis("off")
    fig.suptitle(f"{q.key}: top-{len(ranked)} gallery matches (green = same identity)", fontsize=9)
    fig.tight_layout()
    return fig


def show_results(ev, result) -> list:
    """The re-ID results section: the files the Market-1501 reader skipped, the CMC curve the evaluator kept
    (``result.accumulator.cmc_curve``) against the published points, and the first query with a valid match next
    to its 10 nearest gallery images."""
    from .. import report

    acc = result.accumulator
    if ev.dataset.rejected:
        report.show([{"path": p, "reason": r} for p, r in ev.dataset.rejected], "Files the Market-1501 reader skipped")
    return [plot_cmc(acc.cmc_curve(20), published=ev.recipe.published.accuracy), show_query_matches(acc, topk=10)]
