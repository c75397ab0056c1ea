"""`train.py --dry-run`: build the model abstractly, compile the sharded step for the configured mesh, report
parameters, FLOPs and per-device memory, all without allocating parameters or reading data."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx

from hat.config import Config
from hat.kinds import kind_of
from hat.models import count_params
from hat.train.loop import abstract_state, setup_training, step_flops


def dry_run(config: Config) -> dict[str, Any]:
    """Lowers and compiles one train step on the configured mesh; returns counts, FLOPs and memory per device."""
    kind = kind_of(config)
    setup = setup_training(config)
    state = abstract_state(setup)
    shape = (config.train.batch_size, kind.sequence_length(config))
    batch = {
        key: jax.ShapeDtypeStruct(shape, dtype, sharding=setup.shardings.batch)
        for key, dtype in kind.batch_fields().items()
    }
    compiled = setup.train_step.lower(state["params"], state["opt_state"], batch).compile()
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    sizes = count_params(nnx.merge(setup.graphdef, setup.abstract_params))
    per_device = {
        "arguments": memory.argument_size_in_bytes,
        "outputs": memory.output_size_in_bytes,
        "aliased": memory.alias_size_in_bytes,
        "temporaries": memory.temp_size_in_bytes,
        "generated_code": memory.generated_code_size_in_bytes,
    }
    per_device["peak_estimate"] = (
        per_device["arguments"] + per_device["outputs"] - per_device["aliased"] + per_device["temporaries"]
    )
    return {
        "mesh": dict(setup.rules.mesh.shape),
        "devices": int(np.prod(list(setup.rules.mesh.shape.values()))),
        "params": sizes,
        # Per byte for byte models, per token for token models.
        "flops_per_byte_forward": kind.forward_flops_per_unit(config),
        "model_flops_per_step": step_flops(config),
        "compiled_flops_per_device": float(cost.get("flops", float("nan"))) if cost else float("nan"),
        "memory_per_device_bytes": per_device,
        "unsharded": setup.rules.unsharded(setup.abstract_params),
    }


def format_report(report: dict[str, Any]) -> str:
    """A human-readable table of a dry-run report."""
    gib = 1024**3
    lines = [f"mesh {report['mesh']} ({report['devices']} devices)", "parameters:"]
    lines += [f"  {name:<10} {count / 1e6:>12,.2f} M" for name, count in report["params"].items()]
    lines += [
        f"forward FLOPs per byte   {report['flops_per_byte_forward'] / 1e9:,.3f} G",
        f"model FLOPs per step     {report['model_flops_per_step'] / 1e12:,.2f} T (forward + backward)",
        f"compiled FLOPs / device  {report['compiled_flops_per_device'] / 1e12:,.2f} T "
        "(XLA cost analysis; a scanned loop body counts once)",
        "memory per device (compiled step):",
    ]
    lines += [f"  {name:<14} {size / gib:>10.3f} GiB" for name, size in report["memory_per_device_bytes"].items()]
    if report["unsharded"]:
        lines.append(f"replicated where a mesh axis did not divide ({len(report['unsharded'])} parameters):")
        lines += [f"  {entry}" for entry in report["unsharded"][:8]]
    return "\n".join(lines)
