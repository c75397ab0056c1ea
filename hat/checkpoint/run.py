"""Orbax checkpoints of a run: parameters, optimizer state and step, plus the config and data position as JSON.

Orbax writes each step into a temporary directory and renames it when complete, so a run killed mid-save leaves
the previous checkpoint as the latest restorable one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from hat.config import Config, config_from_dict, to_dict
from hat.errors import HatError


class CheckpointError(HatError, FileNotFoundError):
    """No usable checkpoint at the given path; the message names the path."""


class Checkpointer:
    """Saves and restores `{"params", "opt_state"}` pytrees with their metadata under `<workdir>/checkpoints`."""

    def __init__(self, workdir: str | Path, keep: int = 3, async_save: bool = True) -> None:
        self.directory = Path(workdir).resolve() / "checkpoints"
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def save(self, step: int, state: dict[str, Any], config: Config, extra: dict[str, Any] | None = None) -> None:
        """Starts an (async) save of `state` at `step`; metadata records the config and the next data step."""
        meta = {"step": step, "data_step": step, "config": to_dict(config), **(extra or {})}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self.manager.save(step, args=args)

    def restore(self, step: int, abstract_state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Restores `(state, meta)` at `step` into the shapes, dtypes and shardings of `abstract_state`."""
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()),
        )
        return restored["state"], restored["meta"]

    def wait(self) -> None:
        """Blocks until pending async saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


def locate_checkpoint(path: str | Path) -> tuple[Path, int]:
    """Resolves a run's workdir, its `checkpoints` directory, or one step directory to (checkpoints dir, step)."""
    path = Path(path).resolve()
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path} (give a run's workdir or a checkpoint step directory)")
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if path.name.isdigit() and (path / "meta").exists():
        return path.parent, int(path.name)
    steps = sorted(int(p.name) for p in path.iterdir() if p.name.isdigit() and (p / "meta").exists())
    if not steps:
        raise CheckpointError(f"no complete checkpoint in {path} (train first, or point at a run's workdir)")
    return path, steps[-1]


def load_config_from_checkpoint(path: str | Path) -> tuple[Config, Path, int]:
    """The run config stored with a checkpoint, and where that checkpoint is."""
    directory, step = locate_checkpoint(path)
    manager = ocp.CheckpointManager(directory)
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    manager.close()
    return config_from_dict(meta["config"]), directory, step


def restore_params(path: str | Path, abstract_params: Any) -> Any:
    """Restores only the parameters of a checkpoint (no optimizer state), e.g. for evaluation or generation."""
    directory, step = locate_checkpoint(path)
    manager = ocp.CheckpointManager(directory)
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item={"params": abstract_params},
                # Restore each array with the sharding of its target (one device unless the caller says otherwise).
                restore_args=ocp.checkpoint_utils.construct_restore_args({"params": abstract_params}),
                partial_restore=True,
            )
        ),
    )
    manager.close()
    return restored["state"]["params"]
