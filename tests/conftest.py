"""Test-session settings: tests run tiny models, where XLA's backend optimisations cost more compile time than
they save at run time."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
