"""Shared fixtures: a small config and a model artifact trained once per session."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest

from streamsift.config import Config, ModelConfig, SyntheticConfig


def small_config(tmp_dir: str, **synthetic) -> Config:
    syn = dataclasses.replace(
        SyntheticConfig(), **({"events": 3000, "keys": 10, "seed": 11} | synthetic)
    )
    return dataclasses.replace(
        Config(),
        synthetic=syn,
        model=dataclasses.replace(
            ModelConfig(), dir=f"{tmp_dir}/model", n_estimators=25, history_hours=6.0
        ),
    )


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(config, model_path) with a model trained on a synthetic history."""
    from streamsift.pipeline.run import ensure_model

    tmp = tmp_path_factory.mktemp("streamsift")
    cfg = small_config(str(tmp))
    return cfg, ensure_model(cfg)


@pytest.fixture
def memfs():
    """tests/memfs.py (the ``memtest://`` Beam file system standing in for gs://),
    imported once per process, emptied before and after the test."""
    name = "streamsift_tests_memfs"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("memfs.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    mod = sys.modules[name]
    mod.FILES.clear()
    yield mod
    mod.FILES.clear()
