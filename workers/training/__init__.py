"""Training core: pure torch/transformers (imports no FastAPI, SQLAlchemy or Celery).

``from workers.training import TrainSpec, run_training`` imports torch; the Celery glue calls it
from ``workers.execute``.
"""

from workers.training.loop import (
    DEFAULT_HYPERPARAMETERS,
    Progress,
    TrainingCancelled,
    TrainResult,
    TrainSpec,
    run_training,
)

__all__ = [
    "DEFAULT_HYPERPARAMETERS",
    "Progress",
    "TrainResult",
    "TrainSpec",
    "TrainingCancelled",
    "run_training",
]
