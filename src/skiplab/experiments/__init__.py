"""Experiments that show why skips work.  Importing this package registers them all.

To add one (part 2: degradation, lesion, landscapes, ...):

1. ``skiplab/experiments/<name>.py``: a ``Config`` dataclass (defaults = full setting, ``Config.quick()`` =
   demo setting), a ``Result`` dataclass with ``config``, ``claims`` (:class:`Claim`, verdicts computed from the
   run's numbers), ``tables`` (:class:`Table`), ``notes`` and ``wall_time_s``, and ``run(cfg, progress=None)``;
   end the module with ``SPEC = register_experiment(ExperimentSpec(...))``, ``order`` placing it in the report.
2. Import the module below.
3. Register its figures in :mod:`skiplab.report.figures` with ``@figure("<name>", "<slug>", "<caption>")``.

``skiplab experiment <name>``, ``skiplab report`` and ``skiplab demo`` then pick it up.
"""
from skiplab.experiments import shattered, signal, vanishing  # noqa: F401  (registration)
from skiplab.experiments import features, landscape, lesion  # noqa: F401  (registration)
from skiplab.experiments import degradation, identity, orderings, stochastic_depth, variants  # noqa: F401  (registration)
from skiplab.experiments import exploding, identity_fit, two_layer  # noqa: F401  (registration)
from skiplab.experiments import unet_skips  # noqa: F401  (registration)
from skiplab.experiments.base import Claim, ExperimentSpec, Table, experiments, get_experiment, register_experiment

__all__ = ["Claim", "ExperimentSpec", "Table", "experiments", "get_experiment", "register_experiment"]
