"""Which backend an LLM call goes to: the local engine, or a pool of remote replicas, by name.

Names an agent may give (`--backend NAME`, or `[kernel] backend` for everyone): "local", the model of remote
entries (any of its replicas), or one entry's name, which stands for its model's pool: replicas are
interchangeable by definition, so naming one still lets the least-loaded healthy one answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .backend import LOCAL, Backend, BackendStats, LocalBackend
from .config import BackendSettings, backend_names
from .engine_types import SeqStats, StepRecord
from .remote import BackendError, RemotePool
from .requests import GenRequest, RequestHandle
from .scheduler import Policy


def group_replicas(entries: Mapping[str, BackendSettings]) -> dict[str, dict[str, BackendSettings]]:
    """[backends.NAME] entries by model, in the order they were written."""
    pools: dict[str, dict[str, BackendSettings]] = {}
    for name, s in entries.items():
        pools.setdefault(s.model, {})[name] = s
    return pools


class Backends:
    """Every backend of a kernel and the names that lead to them."""

    def __init__(self, local: LocalBackend, pools: list[RemotePool], default: str) -> None:
        self.local = local
        self.pools = pools
        by_model = {p.model: p for p in pools}
        entries = {r.name: r.settings for p in pools for r in p.replicas}
        self._by_name: dict[str, Backend] = {LOCAL: local}
        for name in backend_names(entries)[1:]:  # an entry stands for its model's pool
            self._by_name[name] = by_model[entries[name].model if name in entries else name]
        self.default = self.resolve(default).name

    @property
    def names(self) -> list[str]:
        """Every name a call may route by ("local", entries, models), in config order."""
        return list(self._by_name)

    @property
    def all(self) -> list[Backend]:
        return [self.local, *self.pools]

    def resolve(self, name: str | None) -> Backend:
        """The backend for a name (None = the default); ValueError naming the known ones."""
        b = self._by_name.get(self.default if name is None else name)
        if b is None:
            raise ValueError(f"--backend: no such backend '{name}' (known: {', '.join(self._by_name)})")
        return b

    def submit(self, req: GenRequest, name: str | None = None) -> RequestHandle:
        return self.resolve(name).submit(req)

    def add_step_listener(self, fn: Callable[[StepRecord], None]) -> None:
        for b in self.all:
            b.add_step_listener(fn)

    def set_policy(self, make: Callable[[], Policy]) -> None:
        """A fresh policy instance for each backend (policies keep per-queue state)."""
        for b in self.all:
            b.set_policy(make())

    def wake(self) -> None:
        for b in self.all:
            b.wake()

    def seqs(self) -> tuple[SeqStats, ...]:
        return tuple(s for b in self.all for s in b.seqs())

    def stats(self) -> tuple[BackendStats, ...]:
        return tuple(row for b in self.all for row in b.backend_stats())

    def close(self) -> None:
        for pool in self.pools:
            pool.close()
        self.local.close()


def probe_pools(pools: list[RemotePool]) -> list[str]:
    """Check every remote server at start-up. Returns warnings (one line each) for replicas that do not answer,
    or answer without listing the model; raises BackendError when no replica of a pool answers."""
    warnings: list[str] = []
    for pool in pools:
        results = pool.probe()
        urls = {r.name: r.settings.base_url for r in pool.replicas}
        if not any(error is None for _, error, _ in results):
            name, error, _ = results[0]
            more = f" (and {len(results) - 1} more replicas)" if len(results) > 1 else ""
            raise BackendError(f"backend {name} ({urls[name]}): {error}{more}")
        for name, error, models in results:
            if error is not None:
                warnings.append(f"backend {name} ({urls[name]}): {error}; skipped until a health check passes")
            elif models and pool.model not in models:
                warnings.append(f"backend {name} ({urls[name]}): does not list model '{pool.model}' "
                                f"(it lists: {', '.join(models[:5])})")
    return warnings


def make_pools(entries: Mapping[str, BackendSettings], make_policy: Callable[[], Policy], *,
               boost_after_s: float, count_prompt: Callable[[GenRequest], int] | None) -> list[RemotePool]:
    return [RemotePool(model, group, make_policy(), boost_after_s=boost_after_s, count_prompt=count_prompt)
            for model, group in group_replicas(entries).items()]


__all__ = ["BackendError", "Backends", "RemotePool", "group_replicas", "make_pools", "probe_pools"]
