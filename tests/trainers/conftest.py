"""Trainer tests run torch single-threaded: on a small shared CPU, OpenMP threads spinning
against other processes make tiny batched ops tens of times slower."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
