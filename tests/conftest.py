"""Test-wide settings: one torch thread (small ops are faster on 2 cores), deterministic hypothesis."""

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")

settings.register_profile(
    "lossbench",
    derandomize=True,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
settings.load_profile("lossbench")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def cuda_available() -> bool:
    return torch.cuda.is_available()


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
