"""nnU-Net v2 trainers that train with lossbench losses (needs the extra: ``pip install 'lossbench[nnunet]'``).

Each trainer is nnU-Net's own ``nnUNetTrainer`` with one change: its loss hook (``_build_loss``) builds a
lossbench loss with :func:`lossbench.losses.build_loss`, adapted to nnU-Net's conventions by
:class:`~lossbench.integrations.nnunet_loss.NnUNetLoss` (softmax over label maps with the background dropped,
or sigmoid over regions; ignore label; float32 outside autocast) and, with deep supervision, applied at every
output scale to that scale's downsampled target and weighted as nnU-Net weights its own loss
(:func:`~lossbench.integrations.nnunet_loss.deep_supervision_weights`). Instances are labelled inside the
loss, separately at every scale.

========================================  =======================================================
trainer (``nnUNetv2_train ... -tr``)        loss
========================================  =======================================================
``nnUNetTrainer_Blob``                     ``blob`` (registry defaults)
``nnUNetTrainer_InverseWeighting``         ``inverse_weighting``
``nnUNetTrainer_ICI``                      ``ici`` (the published loss)
``nnUNetTrainer_DICI``                     ``dici``
``nnUNetTrainer_Lossbench``                any registry loss from ``LOSSBENCH_NNUNET_LOSS``
========================================  =======================================================

A trainer for another registry loss is one short class: a subclass of :class:`nnUNetTrainer_Lossbench` whose
``lossbench_loss`` is the registry name (or ``{"name": ..., **params}``); ``TRAINERS`` and ``__all__`` list it.

``LOSSBENCH_NNUNET_EPOCHS``, ``LOSSBENCH_NNUNET_TRAIN_ITERATIONS`` and ``LOSSBENCH_NNUNET_VAL_ITERATIONS``
shorten training (nnU-Net's defaults are 1000 epochs of 250 + 50 iterations) for a smoke test of a setup;
leave them unset for real training. Every value used is written to nnU-Net's training log.

nnU-Net finds trainers by name only inside its own package: ``lossbench nnunet install`` puts a module there
that imports this one (:mod:`lossbench.integrations.nnunet_install`).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import torch

from lossbench.errors import MissingExtraError, expect
from lossbench.integrations.nnunet_loss import (
    build_nnunet_loss,
    deep_supervision_weights,
    loss_config_from_env,
    nnunet_activation,
    schedule_from_env,
)

try:
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
except ImportError as _exc:
    raise expect(
        "nnunetv2",
        "installed for the nnU-Net integration",
        f"{type(_exc).__name__}: {_exc}",
        "pip install 'lossbench[nnunet]'",
        cls=MissingExtraError,
    ) from _exc


class nnUNetTrainer_Lossbench(nnUNetTrainer):
    """nnU-Net's trainer with a lossbench loss; this generic one reads it from ``LOSSBENCH_NNUNET_LOSS``.

    The variable holds a registry name (``ici``) or a JSON object (``{"name": "ici", "a": 0.25, "b": 0.5,
    "c": 0.25}``) without the activation options, which follow nnU-Net's label conventions. Subclasses fix
    the loss with the class attribute ``lossbench_loss`` and ignore the variable.
    """

    #: registry name or ``{"name": ..., **params}``; None reads ``LOSSBENCH_NNUNET_LOSS``.
    lossbench_loss: ClassVar[str | dict[str, Any] | None] = None

    def __init__(
        self, plans: dict, configuration: str, fold: int, dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 (nnU-Net's signature, read by its checkpoints)
    ) -> None:  # fmt: skip
        super().__init__(plans, configuration, fold, dataset_json, device)
        schedule = schedule_from_env()
        for attr, value in schedule.items():
            setattr(self, attr, value)
        if schedule:
            self.print_to_log_file(f"lossbench: training length from the environment: {schedule}")

    def lossbench_config(self) -> str | dict[str, Any]:
        """The loss to build: the class's ``lossbench_loss``, else ``LOSSBENCH_NNUNET_LOSS``."""
        return self.lossbench_loss if self.lossbench_loss is not None else loss_config_from_env()

    def _build_loss(self) -> torch.nn.Module:
        """The lossbench loss at one scale, wrapped for deep supervision as nnU-Net wraps its own."""
        config = self.lossbench_config()
        regions = bool(self.label_manager.has_regions)
        ignore = self.label_manager.ignore_label
        loss: torch.nn.Module = build_nnunet_loss(config, regions=regions, ignore_label=ignore)
        note = f"lossbench loss: {json.dumps(config)} with {nnunet_activation(regions)}, ignore label {ignore}"
        if self.enable_deep_supervision:
            weights = deep_supervision_weights(
                len(self._get_deep_supervision_scales()), ddp=self.is_ddp and not self._do_i_compile()
            )
            loss = DeepSupervisionWrapper(loss, weights)
            note += f", deep supervision weights {[round(w, 6) for w in weights]}"
        self.print_to_log_file(note)
        return loss


class nnUNetTrainer_Blob(nnUNetTrainer_Lossbench):
    """Blob loss (Kofler et al. 2022) with the registry's defaults."""

    lossbench_loss = "blob"


class nnUNetTrainer_InverseWeighting(nnUNetTrainer_Lossbench):
    """Inverse weighting (Shirokikh et al. 2020) with the registry's defaults."""

    lossbench_loss = "inverse_weighting"


class nnUNetTrainer_ICI(nnUNetTrainer_Lossbench):
    """ICI loss (Eq. 1) as the public code computes it (the registry's defaults)."""

    lossbench_loss = "ici"


class nnUNetTrainer_DICI(nnUNetTrainer_Lossbench):
    """DICI loss (Eq. 6) as the public code computes it (the registry's defaults)."""

    lossbench_loss = "dici"


class nnUNetTrainer_CCDiceCE(nnUNetTrainer_Lossbench):
    """CC-DiceCE: Dice + BCE inside each label component's Voronoi region, mean over the regions."""

    lossbench_loss = "cc_dicece"


#: Every lossbench trainer by class name (the names ``nnUNetv2_train -tr`` accepts once installed): the
#: generic trainer and every subclass defined above.
TRAINERS: dict[str, type[nnUNetTrainer_Lossbench]] = {
    cls.__name__: cls for cls in (nnUNetTrainer_Lossbench, *nnUNetTrainer_Lossbench.__subclasses__())
}

__all__ = ["TRAINERS", *TRAINERS]
