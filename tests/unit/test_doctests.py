"""The examples in the docstrings of the contract and the core are run and must pass."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "consumers.contract.events",
    "consumers.contract.flags",
    "consumers.contract.units",
    "consumers.core.features",
    "consumers.core.models.behaviour",
    "consumers.core.pipeline",
    "tests.eventgen",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True)
    assert result.attempted > 0, f"{name} has no doctest examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {name}"
