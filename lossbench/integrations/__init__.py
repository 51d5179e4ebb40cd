"""Adapters that make lossbench's losses usable inside other training frameworks (optional extras).

- :mod:`lossbench.integrations.nnunet`: nnU-Net v2 trainers (extra ``nnunet``; imports nnunetv2).
- :mod:`lossbench.integrations.nnunet_loss`: nnU-Net's loss conventions around a lossbench loss (torch only).
- :mod:`lossbench.integrations.nnunet_install`: ``lossbench nnunet install`` / ``uninstall``.

Nothing here is imported by ``import lossbench``; only :mod:`lossbench.integrations.nnunet` needs nnunetv2 and
raises :class:`~lossbench.errors.MissingExtraError` (with the pip command) without it.
"""
