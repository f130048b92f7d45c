"""Images with their top-5 predicted classes."""
from __future__ import annotations

import numpy as np


def show_top5(kept: list, max_images: int = 4):
    """Grid of (sample, logits) pairs: the image, its label and the top-5 class indices with softmax scores."""
    import matplotlib.pyplot as plt
    from PIL import Image

    kept = kept[:max_images]
    fig, axes = plt.subplots(1, max(len(kept), 1), figsize=(3.2 * max(len(kept), 1), 3.6), squeeze=False)
    for ax, (sample, logits) in zip(axes[0], kept):
        with Image.open(sample.path) as im:
            ax.imshow(im.convert("RGB"))
        z = np.asarray(logits, dtype=np.float64)
        p = np.exp(z - z.max())
        p /= p.sum()
        top = np.argsort(-z)[:5]
        lines = [f"{'*' if c == sample.target else ' '}{c}: {p[c]:.2f}" for c in top]
        ax.set_title(f"{sample.key}\nlabel {sample.target}", fontsize=8)
        ax.text(0.02, 0.02, "\n".join(lines), transform=ax.transAxes, fontsize=7, family="monospace",
                va="bottom", bbox={"facecolor": "white", "alpha": 0.8})
        ax.axis("off")
    for ax in axes[0][len(kept):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def show_results(ev, result) -> list:
    """The classification results section: the first kept images with their top-5 classes (``show_top5``)."""
    return [show_top5(result.kept)]
