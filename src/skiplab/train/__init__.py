"""Training: ``TrainConfig`` -> ``train(cfg) -> TrainResult``, with recipes, checkpoints, exact resume and DDP.

    from skiplab.train import TrainConfig, train
    result = train(TrainConfig.from_recipe("fast", model="resnet20", data="cifar10", out="runs/r20"))
"""
from skiplab.train.checkpoint import Checkpoint, CheckpointError, load_checkpoint, load_model_state, save_checkpoint
from skiplab.train.config import RECIPES, TrainConfig
from skiplab.train.loop import TrainingDiverged, TrainResult, evaluate, resolve_amp, resolve_device, train
from skiplab.train.schedule import Schedule
from skiplab.train.segmentation import evaluate_segmentation, segmentation_loss, segmentation_metrics

__all__ = [
    "TrainConfig", "RECIPES", "train", "TrainResult", "evaluate", "TrainingDiverged", "Schedule",
    "Checkpoint", "CheckpointError", "load_checkpoint", "load_model_state", "save_checkpoint",
    "resolve_amp", "resolve_device", "evaluate_segmentation", "segmentation_loss", "segmentation_metrics",
]
