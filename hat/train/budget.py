"""Fitting a run's schedule to its time budget (`train.fit_steps_to_budget`).

The same config trains at different speeds on different machines (two idle 2-core machines of one kind ran
`hat_tiny` at 0.82 and 1.35 steps/s), so a fixed `train.steps` either overruns a slow machine's budget (and the
`time_budget_s` stop cuts its learning-rate decay short) or leaves most of a fast machine's budget unused. Fitting
times the warmup's steps on the machine at hand and, when the warmup ends, sets `train.steps` to what the rest of
the budget holds. The warmup's learning rates do not depend on `steps` (a linear ramp to the peak), so the fitted
run is step for step the run that would have been given that `steps` from the start; its number is printed, saved
in the workdir's config.yaml and in every checkpoint (a resume keeps it), and reproduces the run anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hat.config import ConfigError, TrainConfig

# Steps after the (re)start that are not timed: the first compiles, and the next few still warm caches up.
UNTIMED_STEPS = 3
# The warmup must time at least this many steps for a rate worth trusting.
MIN_TIMED_STEPS = 10
# The part of the rest of the budget planned for steps: the rate wobbles by a few percent over a run, and an
# overrun is cut by the `time_budget_s` stop before the schedule has decayed.
SAFETY = 0.96


def check_fit(cfg: TrainConfig) -> None:
    """A `ConfigError` when `train.fit_steps_to_budget` has no budget to fit or too short a warmup to time."""
    if cfg.fit_steps_to_budget and (cfg.time_budget_s <= 0 or cfg.warmup_steps < UNTIMED_STEPS + MIN_TIMED_STEPS):
        raise ConfigError(
            "train.fit_steps_to_budget needs train.time_budget_s > 0 (the budget to fit) and train.warmup_steps >= "
            f"{UNTIMED_STEPS + MIN_TIMED_STEPS} (the steps it times); got {cfg.time_budget_s} and {cfg.warmup_steps}"
        )


@dataclass
class BudgetFit:
    """Watches the warmup's step times; `observe` returns the fitted `steps` once, after the warmup's last step."""

    cfg: TrainConfig
    start_step: int
    first_step_s: float = float("nan")  # the first step's seconds after a (re)start: compilation, mostly
    marks: dict[int, float] = field(default_factory=dict)  # step -> training seconds so far
    rate: float = float("nan")  # steps per second over the timed steps

    @property
    def fit_at(self) -> int:
        """The step after which `steps` is fitted: the warmup's last."""
        return self.cfg.warmup_steps

    @property
    def timed_from(self) -> int:
        """The step whose end starts the timing."""
        return min(self.start_step + UNTIMED_STEPS, self.fit_at - 1)

    @property
    def can_time(self) -> bool:
        """Whether steps are left to time before the warmup ends (a resume may start too close to its end)."""
        return self.timed_from > self.start_step

    @property
    def marks_at(self) -> tuple[int, int]:
        """The steps whose end times the rate rests on: the loop waits for their results before reading the clock
        (steps are dispatched ahead of their results, by up to a logging interval)."""
        return self.timed_from, self.fit_at

    def observe(self, step: int, train_seconds: float, step_seconds: float) -> int | None:
        """Records that `step` ended at `train_seconds` of training (`step_seconds` for itself); the fitted
        `steps` after the warmup's last step, else None."""
        if step == self.start_step + 1:
            self.first_step_s = step_seconds
        self.marks[step] = train_seconds
        if step != self.fit_at:
            return None
        first = self.timed_from
        self.rate = (step - first) / max(train_seconds - self.marks[first], 1e-9)
        # Rebuilding the step for the new schedule compiles again: about the first step's time, less one step.
        recompile_s = max(self.first_step_s - 1.0 / self.rate, 0.0)
        left_s = self.cfg.time_budget_s - train_seconds - recompile_s
        return max(step + 1, step + math.floor(left_s * self.rate * SAFETY))


def agreed_steps(steps: int) -> int:
    """Process 0's fitted `steps`, on every process (each times its own steps; all must run one schedule)."""
    import jax

    if jax.process_count() == 1:
        return steps
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.array(steps, np.int64)))
