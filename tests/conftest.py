"""Shared fixtures. The real model is loaded once per test session: one engine runs on it, and every kernel the
integration tests start runs its engine on it too (in a thread of the test process, `kernel.engine_process =
false`), so no module loads the weights again or starts an engine process (tests/test_engine_process.py starts
its own: that is what it tests)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from aiosh.kernel import Kernel
from aiosh.kernel.config import Config
from aiosh.kernel.engine import Engine, EngineSettings
from aiosh.kernel.model import Model


@pytest.fixture(autouse=True, scope="session")
def _private_user_dirs(tmp_path_factory):
    """No test reads the real user config or writes the real user database (~/.local/share/aiosh)."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("user")
    mp.setenv("XDG_CONFIG_HOME", str(root / "config"))
    mp.setenv("XDG_DATA_HOME", str(root / "data"))
    yield
    mp.undo()


ENGINE_SETTINGS = dict(n_ctx=2048, n_slots=4, kv_cells=8192, batch_tokens=512)


@pytest.fixture(scope="session")
def model():
    """The embedded SmolLM2-135M model, loaded once."""
    m = Model()
    yield m
    m.close()


@pytest.fixture(scope="session")
def engine(model):
    """One running engine for the whole session: 4 slots, 8192 KV cells, a 2048-token window."""
    e = Engine(model, EngineSettings(**ENGINE_SETTINGS)).start()
    yield e
    e.close()


@pytest.fixture(scope="session")
def kernel_factory(model) -> Callable[[Config], Kernel]:
    """`kernel_factory(cfg)`: a Kernel of that configuration whose engine is a thread on the session's model."""

    def make(cfg: Config) -> Kernel:
        threaded = dataclasses.replace(cfg, kernel=dataclasses.replace(cfg.kernel, engine_process=False))
        return Kernel(threaded, model=model)

    return make
