"""Training: datasets, the proxy trainer, zero-cost proxies, checkpoints and full runs.

``data`` (``DataConfig`` -> ``load_dataset`` -> ``ImageData``), ``trainer`` (``TrainConfig``,
``train_model``, ``train_proxy``), ``proxies`` (``score_model``), ``checkpoint`` and ``run``
(``hvtnas train``).
"""

from hvtnas.train.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from hvtnas.train.data import DataConfig, DatasetError, ImageData, load_dataset
from hvtnas.train.proxies import ZERO_COST_PROXIES, count_flops, score_model, zero_cost_scores
from hvtnas.train.run import TrainRunConfig, read_run_config, run_training
from hvtnas.train.trainer import (
    AugmentConfig,
    EpochReport,
    TrainConfig,
    TrialResult,
    train_model,
    train_proxy,
)

__all__ = [
    "ZERO_COST_PROXIES",
    "AugmentConfig",
    "CheckpointError",
    "DataConfig",
    "DatasetError",
    "EpochReport",
    "ImageData",
    "TrainConfig",
    "TrainRunConfig",
    "TrialResult",
    "count_flops",
    "load_checkpoint",
    "load_dataset",
    "load_model",
    "read_run_config",
    "run_training",
    "save_checkpoint",
    "score_model",
    "train_model",
    "train_proxy",
    "zero_cost_scores",
]
