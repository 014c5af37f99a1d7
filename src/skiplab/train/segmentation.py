"""Segmentation: per-pixel losses (cross-entropy, Dice), metrics (mean IoU, pixel accuracy, boundary F1), the check
that a model's output fits the data's task, and :func:`evaluate_segmentation`.

Masks are int64 ``(N, H, W)`` class indices in ``[0, K)``; :data:`IGNORE_INDEX` (-100, PyTorch's cross-entropy
default, what the loader's crop padding writes) marks unlabelled pixels, which no loss or metric counts.

Metrics are pooled over every labelled pixel of a split (not averaged per image):

* **pixel accuracy**: correct labelled pixels / labelled pixels.
* **mean IoU**: per class TP / (TP + FP + FN) from the confusion matrix, averaged over the classes that occur in
  the target or the prediction.
* **boundary F1** (the BF score of Csurka, Larlus & Perronnin 2013, "What is a good evaluation measure for
  semantic segmentation?", here pooled over the split): a pixel lies on class c's boundary when it is of class c
  and one of its 4 neighbours (inside the image, labelled) is not.  A predicted boundary pixel is correct when a
  target boundary pixel of the same class lies within ``tolerance`` pixels — Chebyshev distance, the
  ``(2t + 1) x (2t + 1)`` square around it — and a target boundary pixel is found when a predicted one does;
  precision and recall are those fractions, F1 = 2PR / (P + R) per class, averaged over the classes with a
  boundary in the target or the prediction.  **Tolerance: 1 pixel** (:data:`BOUNDARY_TOLERANCE`).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from skiplab.data.augment import MASK_FILL
from skiplab.train.faults import fault_point

IGNORE_INDEX = MASK_FILL  # -100
SEG_LOSSES = ("ce", "dice", "ce+dice")
BOUNDARY_TOLERANCE = 1  # pixels (Chebyshev distance)
SEG_METRICS = ("miou", "boundary_f1")  # per-split record keys besides loss and acc (pixel accuracy)


# ------------------------------------------------------------------------------------------------ input checks
def check_masks(logits: torch.Tensor, masks: torch.Tensor, *, name: str = "masks") -> None:
    """Raise naming ``name``, what was expected and what was given, for masks that do not fit ``logits``
    ``(N, K, H, W)``: another shape than ``(N, H, W)``, a non-integer dtype, or values outside ``[0, K)`` other
    than :data:`IGNORE_INDEX`.  Reads the mask's range back to the host (one sync)."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 4:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits: expected per-pixel scores of shape (N, K, H, W) from a segmentation model; got "
                         f"{got} (a classifier's (N, K) output cannot be compared with masks)")
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"{name}: expected an int64 tensor (N, H, W) of class indices; got {type(masks).__name__}")
    n, k, h, w = logits.shape
    if tuple(masks.shape) != (n, h, w):
        raise ValueError(f"{name}: expected shape (N, H, W) = {(n, h, w)} to match the logits {tuple(logits.shape)} "
                         f"(a mask must have its image's height and width); got {tuple(masks.shape)}")
    if masks.dtype.is_floating_point or masks.dtype == torch.bool:
        raise TypeError(f"{name}: expected integer class indices (int64); got dtype {masks.dtype} "
                        f"(convert with .long())")
    labelled = masks[masks != IGNORE_INDEX]
    if labelled.numel() and (int(labelled.min()) < 0 or int(labelled.max()) >= k):
        raise ValueError(f"{name}: expected class indices in [0, {k}) (the logits have {k} classes) or "
                         f"{IGNORE_INDEX} (unlabelled); got values in [{int(labelled.min())}, {int(labelled.max())}]")


def check_model_task(model: nn.Module, image_shape: tuple[int, ...], task: str, num_classes: int, *,
                     model_name: str, data_name: str, device: torch.device | str = "cpu") -> None:
    """Refuse a model whose output does not fit the data's ``task``, naming the model, the data, what was expected
    and what the model gives.

    Classification: a model that declares per-pixel output (``dense_output = True``: U-Net and the segmentation
    nets) is refused without running it.  Segmentation: the model runs once on a zero image of ``image_shape``
    (eval mode, no gradients, so neither the weights, the BatchNorm statistics nor any random stream change) and
    must return ``(1, K, H, W)`` maps with the image's H and W and ``K >= num_classes``."""
    if task == "classification":
        if getattr(model, "dense_output", False):
            raise ValueError(f"model={model_name!r} is a segmentation model (per-pixel output) but data={data_name!r}"
                             f" is a classification dataset (one label per image); expected a classifier such as "
                             f"resnet20, or segmentation data such as synthetic_seg or mnist_strokes")
        return
    c, h, w = image_shape
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, c, h, w, device=device))
    finally:
        model.train(was_training)
    out = out[0] if isinstance(out, (tuple, list)) else out
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        raise ValueError(f"model={model_name!r} is not a segmentation model but data={data_name!r} is a "
                         f"segmentation dataset ({num_classes}-class masks of {h}x{w}); expected per-pixel output "
                         f"(1, K, {h}, {w}) for one {c}x{h}x{w} image, got {shape}. Segmentation models: unet, "
                         f"plain_unet, unet_resnet18, linknet_resnet18, ... (`skiplab models --family unet`)")
    if tuple(out.shape[-2:]) != (h, w):
        raise ValueError(f"model={model_name!r} returns {out.shape[-2]}x{out.shape[-1]} maps for {h}x{w} images of "
                         f"data={data_name!r}; expected maps of the masks' size {h}x{w} (output shape {shape})")
    if out.shape[1] < num_classes:
        raise ValueError(f"model={model_name!r} predicts {out.shape[1]} classes per pixel but data={data_name!r} "
                         f"has {num_classes} (mask values 0..{num_classes - 1}); expected num_classes >= "
                         f"{num_classes}")


# ------------------------------------------------------------------------------------------------------ losses
def dice_loss(logits: torch.Tensor, masks: torch.Tensor, *, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss (Milletari et al. 2016, V-Net), 1 - mean over classes of ``(2 |P.G| + s) / (|P| + |G| + s)``
    with P the softmax probabilities and G the one-hot masks, each summed over the batch's labelled pixels."""
    k = logits.shape[1]
    valid = (masks != IGNORE_INDEX).unsqueeze(1)  # (N, 1, H, W)
    probs = logits.float().softmax(1) * valid  # (N, K, H, W)
    onehot = F.one_hot(masks.clamp(0, k - 1), k).permute(0, 3, 1, 2).to(probs.dtype) * valid
    inter = (probs * onehot).sum((0, 2, 3))  # (K,)
    denom = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1 - ((2 * inter + smooth) / (denom + smooth)).mean()


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor, *, loss: str = "ce", label_smoothing: float = 0.0,
                      check: bool = True) -> torch.Tensor:
    """The training loss of ``logits`` (N, K, H, W) against ``masks`` (N, H, W): ``"ce"`` per-pixel cross-entropy
    (mean over labelled pixels), ``"dice"`` soft Dice, ``"ce+dice"`` their sum.  ``check`` validates the masks
    first (:func:`check_masks`, one host sync; the training loop validates its data once instead)."""
    if loss not in SEG_LOSSES:
        raise ValueError(f"loss must be one of {', '.join(map(repr, SEG_LOSSES))}; got {loss!r}")
    if check:
        check_masks(logits, masks)
    logits = logits.float()
    total = torch.zeros((), device=logits.device)
    if loss in ("ce", "ce+dice"):
        total = total + F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)
    if loss in ("dice", "ce+dice"):
        total = total + dice_loss(logits, masks)
    return total


class SegmentationLoss(nn.Module):
    """:func:`segmentation_loss` as a criterion ``(logits, masks) -> loss`` for the training step (no mask check:
    the loop's datasets are validated when built)."""

    def __init__(self, loss: str = "ce", label_smoothing: float = 0.0) -> None:
        super().__init__()
        if loss not in SEG_LOSSES:
            raise ValueError(f"loss must be one of {', '.join(map(repr, SEG_LOSSES))}; got {loss!r}")
        self.loss, self.label_smoothing = loss, label_smoothing

    def forward(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return segmentation_loss(logits, masks, loss=self.loss, label_smoothing=self.label_smoothing, check=False)


# ----------------------------------------------------------------------------------------------------- metrics
def boundary_pixels(labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` bool: pixels with a 4-neighbour of another label, both pixels inside the image and labelled.
    Both pixels of such a pair are boundary pixels, each of its own class."""
    edge = torch.zeros_like(valid)
    vert = (labels[:, 1:] != labels[:, :-1]) & valid[:, 1:] & valid[:, :-1]  # (N, H-1, W): pixel vs the one above
    edge[:, 1:] |= vert
    edge[:, :-1] |= vert
    horiz = (labels[:, :, 1:] != labels[:, :, :-1]) & valid[:, :, 1:] & valid[:, :, :-1]  # (N, H, W-1)
    edge[:, :, 1:] |= horiz
    edge[:, :, :-1] |= horiz
    return edge


def dilate(mask: torch.Tensor, tolerance: int) -> torch.Tensor:
    """``(N, H, W)`` bool: pixels within Chebyshev distance ``tolerance`` of a True pixel of ``mask``."""
    if tolerance == 0:
        return mask
    k = 2 * tolerance + 1
    return F.max_pool2d(mask[:, None].float(), k, stride=1, padding=tolerance)[:, 0] > 0


def boundary_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                    tolerance: int = BOUNDARY_TOLERANCE) -> torch.Tensor:
    """``(K, 4)`` int64 per class: predicted boundary pixels, those matched by a target boundary within
    ``tolerance``, target boundary pixels, those matched by a predicted one.  ``pred``/``target`` (N, H, W)."""
    valid = target != IGNORE_INDEX
    edge_t, edge_p = boundary_pixels(target, valid), boundary_pixels(pred, valid)
    rows = []
    for c in range(num_classes):
        gb, pb = edge_t & (target == c), edge_p & (pred == c)
        rows.append(torch.stack([pb.sum(), (pb & dilate(gb, tolerance)).sum(), gb.sum(),
                                 (gb & dilate(pb, tolerance)).sum()]))
    return torch.stack(rows).to(torch.int64)


def _f1(counts: torch.Tensor) -> list[float | None]:
    """Per-class boundary F1 from :func:`boundary_counts` (None for a class with no boundary anywhere)."""
    out: list[float | None] = []
    for pb, pm, gb, gm in counts.tolist():
        if pb == 0 and gb == 0:
            out.append(None)
            continue
        p, r = (pm / pb if pb else 0.0), (gm / gb if gb else 0.0)
        out.append(2 * p * r / (p + r) if p + r > 0 else 0.0)
    return out


class SegmentationMeter:
    """Sums what the metrics need over batches, on the batches' device (no host sync until :meth:`compute`): the
    confusion matrix (rows: target, columns: prediction) and the boundary counts."""

    def __init__(self, num_classes: int, *, tolerance: int = BOUNDARY_TOLERANCE,
                 device: torch.device | str = "cpu") -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive integer; got {num_classes!r}")
        if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
            raise ValueError(f"tolerance: expected an integer number of pixels >= 0; got {tolerance!r}")
        self.num_classes, self.tolerance = num_classes, tolerance
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.boundary = torch.zeros(num_classes, 4, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` and ``target`` (N, H, W) class indices (target may hold IGNORE_INDEX)."""
        k = self.num_classes
        valid = target != IGNORE_INDEX
        idx = target[valid] * k + pred[valid]
        self.confusion += torch.bincount(idx, minlength=k * k).view(k, k)
        self.boundary += boundary_counts(pred, target, k, self.tolerance)

    def compute(self) -> dict[str, Any]:
        """``acc`` (pixel accuracy), ``miou``, ``boundary_f1``, and per class ``iou`` / ``boundary_f1_per_class``
        (None for a class absent from target and prediction)."""
        cm = self.confusion.double().cpu()
        inter = cm.diag()
        union = cm.sum(0) + cm.sum(1) - inter
        iou = [float(i / u) if u > 0 else None for i, u in zip(inter, union)]
        bf1 = _f1(self.boundary.cpu())
        labelled = float(cm.sum())
        present_iou, present_bf1 = [v for v in iou if v is not None], [v for v in bf1 if v is not None]
        return {"acc": float(inter.sum()) / labelled if labelled else float("nan"),
                "miou": sum(present_iou) / len(present_iou) if present_iou else float("nan"),
                "boundary_f1": sum(present_bf1) / len(present_bf1) if present_bf1 else float("nan"),
                "iou": iou, "boundary_f1_per_class": bf1, "tolerance": self.tolerance}


def segmentation_metrics(pred: torch.Tensor, target: torch.Tensor, num_classes: int, *,
                         tolerance: int = BOUNDARY_TOLERANCE) -> dict[str, Any]:
    """Pixel accuracy, mean IoU and boundary F1 (see the module docstring) of predicted class maps ``pred``
    (N, H, W) — e.g. ``logits.argmax(1)`` — against ``target`` masks (N, H, W), pooled over the batch."""
    if not isinstance(pred, torch.Tensor) or pred.dim() != 3 or pred.dtype.is_floating_point:
        got = f"{pred.dtype} tensor of shape {tuple(pred.shape)}" if isinstance(pred, torch.Tensor) else \
            type(pred).__name__
        raise ValueError(f"pred: expected integer class maps (N, H, W), e.g. logits.argmax(1); got {got}")
    check_masks(torch.empty(pred.shape[0], num_classes, *pred.shape[1:], device="meta"), target, name="target")
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        raise ValueError(f"pred: expected class indices in [0, {num_classes}); got values in "
                         f"[{int(pred.min())}, {int(pred.max())}]")
    meter = SegmentationMeter(num_classes, tolerance=tolerance, device=pred.device)
    meter.update(pred.long(), target.long())
    return meter.compute()


# -------------------------------------------------------------------------------------------------- evaluation
def evaluate_segmentation(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
                          device: torch.device | str | None = None, *, amp: torch.dtype | None = None,
                          tta: str = "none", tolerance: int = BOUNDARY_TOLERANCE) -> dict[str, Any]:
    """Per-pixel cross-entropy (``loss``, mean over labelled pixels) and the metrics of
    :meth:`SegmentationMeter.compute` of ``model`` over ``loader``'s ``(images, masks)`` batches, in eval mode
    without gradients.  ``tta="flip"``: logits averaged over each image and its mirror image (mirrored back)."""
    if tta not in ("none", "flip"):
        raise ValueError(f"tta must be one of 'none', 'flip'; got {tta!r}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    meter: SegmentationMeter | None = None
    try:
        with torch.no_grad():
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                ctx = torch.autocast(device_type=device.type, dtype=amp) if amp is not None else \
                    contextlib.nullcontext()
                with ctx:
                    logits = model(x).float()
                    if tta == "flip":
                        logits = (logits + model(x.flip(-1)).float().flip(-1)) / 2
                if meter is None:
                    check_masks(logits, y)  # the first batch: shapes and label range, named
                    meter = SegmentationMeter(logits.shape[1], tolerance=tolerance, device=device)
                loss_sum += F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum").double()
                meter.update(logits.argmax(1), y)
                fault_point("eval")
    finally:
        model.train(was_training)
    if meter is None:
        raise ValueError("evaluate_segmentation: the loader yielded no samples")
    out = meter.compute()
    labelled = int(meter.confusion.sum())
    out["loss"] = float(loss_sum) / labelled if labelled else float("nan")
    return out
