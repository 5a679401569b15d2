"""Several DeepSpeed engines trained as one job (a GAN's generator and discriminator,
each with its own optimizer and LR schedule), offering what the loop, evaluation and
checkpointing call on a single engine.

A checkpoint holds every engine under the one step tag, in a sub-folder per engine:

    step-000000100/generator/mp_rank_00_model_states.pt, .../*optim_states.pt
    step-000000100/discriminator/...

so deepyard's writer hashes, records and publishes them in one manifest, atomically,
exactly like a single engine's files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from torch import nn


class MultiEngine:
    """Named DeepSpeed engines; the first one speaks for the job (LR, grad norm, forward)."""

    def __init__(self, engines: dict[str, Any], module: nn.Module) -> None:
        if not engines:
            raise ValueError("MultiEngine needs at least one engine")
        self.engines = engines
        self.module = module  # the whole model: evaluation broadcasts its buffers
        self._snapshots: Any = None
        self._own_snapshots: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        return self.engines[name]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.engines.values())

    @property
    def lead(self) -> Any:
        return next(iter(self.engines.values()))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The whole model's forward (a GAN: the discriminator's logits)."""
        return self.module(*args, **kwargs)

    def train(self, mode: bool = True) -> MultiEngine:
        for engine in self:
            engine.train(mode)
        self.module.train(mode)
        return self

    def eval(self) -> MultiEngine:
        return self.train(False)

    def get_lr(self) -> list[float]:
        return list(self.lead.get_lr())

    def get_global_grad_norm(self) -> Any:
        return self.lead.get_global_grad_norm()

    # -- checkpoints ---------------------------------------------------------------------

    @property
    def checkpoint_engine(self) -> Any:
        return self._snapshots

    @checkpoint_engine.setter
    def checkpoint_engine(self, snapshots: Any) -> None:
        """deepyard's SnapshotEngine: every engine saves through one of its own (its host
        buffers are keyed by file name, which the engines share), handed over in `save`."""
        self._snapshots = snapshots
        for name, engine in self.engines.items():
            own = type(snapshots)(snapshots.copy) if hasattr(snapshots, "take") else snapshots
            self._own_snapshots[name] = own
            engine.checkpoint_engine = own

    def save_checkpoint(
        self, save_dir: str, tag: str, client_state: dict[str, Any] | None = None, **kwargs: Any
    ) -> bool:
        """Every engine into save_dir/tag/<name>/; their snapshots go to the shared engine."""
        kwargs["save_latest"] = False  # one tag for all: there is no per-engine "latest"
        collected: list[Any] = []
        for name, engine in self.engines.items():
            engine.save_checkpoint(
                os.path.join(save_dir, tag), tag=name, client_state=client_state or {}, **kwargs
            )
            own = self._own_snapshots.get(name)
            if own is not None and own is not self._snapshots and hasattr(own, "take"):
                collected += own.take()
        if self._snapshots is not None and hasattr(self._snapshots, "pending"):
            self._snapshots.pending = collected
        return True

    def load_checkpoint(
        self, load_dir: str, tag: str, **kwargs: Any
    ) -> tuple[str | None, dict[str, Any] | None]:
        """Every engine from load_dir/tag/<name>/: (the tag's path, the first one's client
        state), or (None, None) when an engine found nothing."""
        client: dict[str, Any] | None = None
        for i, (name, engine) in enumerate(self.engines.items()):
            path, state = engine.load_checkpoint(os.path.join(load_dir, tag), tag=name, **kwargs)
            if path is None:
                return None, None
            client = state if i == 0 else client
        return os.path.join(load_dir, tag), client
