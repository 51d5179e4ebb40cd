"""A five-minute tour of lossbench's Python API on the ICI paper's Figure 1 situation.

Run: .venv/bin/python examples/api_tour.py
"""

import torch

from lossbench.cc import label_components
from lossbench.data.scenes import figure1
from lossbench.losses import build_loss
from lossbench.metrics import atlas_metrics, cc_metrics, detection_metrics, panoptic_metrics

scene = figure1(spatial_dims=2)  # 64x64: 5 label instances, 9 predicted blobs (5 of them touch no label)
prob = torch.tensor(scene.pred)[None, None].requires_grad_()  # (B, C, H, W) probabilities
label = torch.tensor(scene.label)[None, None]

n_label = label_components(label[:, 0] > 0).counts.tolist()
n_pred = label_components(prob[:, 0].detach() >= 0.5).counts.tolist()
print(f"label instances: {n_label}, prediction instances: {n_pred}")

for cfg in [
    {"name": "dice"},
    {"name": "blob"},  # alpha=2, beta=1
    {"name": "ici", "a": 0.25, "b": 0.5, "c": 0.25},  # the published loss (the authors' code, exact labelling)
    {"name": "ici", "a": 0.25, "b": 0.5, "c": 0.25, "reference": False},  # lossbench's design: Eq. 5, trainable center
    {"name": "cc_dicece"},  # Dice + BCE inside each label component's Voronoi region
]:
    loss = build_loss(cfg)  # probabilities in (sigmoid=False, MONAI's default); use sigmoid=True for logits
    terms = loss.terms(prob, label)
    terms["total"].backward()
    grad_norm = float(prob.grad.norm())
    prob.grad = None
    print(cfg, {k: round(float(v.detach()), 4) for k, v in terms.items()}, f"|grad|={grad_norm:.4f}")

pred, target = scene.pred >= 0.5, scene.label > 0
print(atlas_metrics(pred, target, connectivity=1))
det = detection_metrics(pred, target, size_bins=(10, 100))
print({k: det[k] for k in ("connectivity", "n_target", "n_pred", "missed", "false", "recall")})
pq = panoptic_metrics(pred, target)
print({k: round(pq[k], 4) if isinstance(pq[k], float) else pq[k] for k in ("pq", "sq", "rq", "tp", "fp", "fn")})
cc = cc_metrics(pred, target)
print({"cc_dice": round(cc["cc_dice"], 4), "per component": [round(v, 3) for v in cc["cc_dice_components"]]})
