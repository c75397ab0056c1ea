"""Processes, devices and the mesh: `jax.distributed` start-up, mesh construction, and the matmul peak for MFU."""

from __future__ import annotations

import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh

from hat.config import DistributedConfig, ParallelConfig
from hat.errors import HatError
from hat.models.sharding import ShardingRules


class MeshError(HatError, ValueError):
    """The configured mesh does not fit the devices; the message says how to fix `parallel.mesh`."""


def initialize_distributed(cfg: DistributedConfig) -> bool:
    """Starts JAX's multi-controller runtime when configured (see `DistributedConfig`); True if it did.

    Must run before anything touches a JAX device.
    """
    address = cfg.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    if cfg.initialize == "never" or (cfg.initialize == "auto" and not address):
        return False
    if jax.distributed.is_initialized():
        return True
    num_processes = cfg.num_processes or _env_int("JAX_NUM_PROCESSES")
    process_id = cfg.process_id if cfg.process_id >= 0 else _env_int("JAX_PROCESS_ID")
    if cfg.cpu_collectives != "none":
        # Only affects the CPU backend; GPU and TPU bring their own collectives.
        jax.config.update("jax_cpu_collectives_implementation", cfg.cpu_collectives)
    jax.distributed.initialize(coordinator_address=address or None, num_processes=num_processes, process_id=process_id)
    return True


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def resolve_mesh_shape(mesh: dict[str, int], num_devices: int) -> dict[str, int]:
    """Axis sizes with the `-1` axis (if any) filled so that their product is `num_devices`."""
    fixed = math.prod(size for size in mesh.values() if size != -1)
    if -1 in mesh.values():
        if num_devices % fixed:
            raise MeshError(
                f"parallel.mesh {mesh}: the fixed axes ({fixed} devices) do not divide the {num_devices} devices"
            )
        return {name: (num_devices // fixed if size == -1 else size) for name, size in mesh.items()}
    if fixed != num_devices:
        raise MeshError(
            f"parallel.mesh {mesh} needs {fixed} devices but {num_devices} are present; "
            "set one axis to -1 to take the rest"
        )
    return dict(mesh)


def build_mesh(cfg: ParallelConfig, devices: list[jax.Device] | None = None) -> Mesh:
    """The device mesh of `cfg.mesh` over all devices of all processes (auto-sharded axes)."""
    devices = devices if devices is not None else jax.devices()
    shape = resolve_mesh_shape(cfg.mesh, len(devices))
    return jax.make_mesh(tuple(shape.values()), tuple(shape), axis_types=(AxisType.Auto,) * len(shape), devices=devices)


def build_rules(cfg: ParallelConfig, mesh: Mesh) -> ShardingRules:
    """The config's rules table bound to `mesh`."""
    return ShardingRules(mesh, cfg.rules, cfg.part_rules)


def measure_matmul_peak(size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of one device on a float32 `size`^3 matmul (best of `repeats`): the CPU stand-in for a peak spec."""
    device = jax.local_devices()[0]
    a = jax.device_put(jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), jnp.float32), device)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best
