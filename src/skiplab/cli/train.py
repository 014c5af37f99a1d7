"""`skiplab train` and `skiplab eval`.

Flags map one-to-one onto :class:`skiplab.train.TrainConfig` fields; a flag left out is not passed, so every
default lives in the dataclass (or in the ``--recipe`` chosen).  ``torchrun --nproc_per_node=N -m skiplab
train ...`` runs the same command data-parallel.
"""
from __future__ import annotations

import json
from typing import Any, Optional

import typer

from skiplab.cli.app import app, console, err_console
from skiplab.train.loop import RUNTIME_FIELDS



def _json_dict(name: str, text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--{name} must be a JSON object such as '{{\"width\": 2}}'; got {text!r} ({e.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"--{name} must be a JSON object such as '{{\"width\": 2}}'; got {text!r}")
    return value


def _milestones(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        parts = [p for p in text.replace(" ", "").split(",") if p]
        return tuple(float(p) if "." in p or "e" in p.lower() else int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--milestones must be comma-separated numbers such as 32000,48000; got {text!r}") from None


@app.command("train")
def train_cmd(
    model: Optional[str] = typer.Option(None, help="Registered model name (skiplab models)."),
    model_kwargs: Optional[str] = typer.Option(None, help='Model build kwargs as JSON, e.g. \'{"width": 2}\'.'),
    data: Optional[str] = typer.Option(None, help="Dataset name (skiplab data list)."),
    data_dir: Optional[str] = typer.Option(None, help="Folder or archive with the dataset files."),
    data_options: Optional[str] = typer.Option(None, help="load_dataset options as JSON."),
    recipe: Optional[str] = typer.Option(None, help="Named preset: he2015 or fast; other flags override it."),
    epochs: Optional[int] = typer.Option(None, help="Training length in epochs."),
    max_steps: Optional[int] = typer.Option(None, help="Training length in optimizer steps (instead of epochs)."),
    batch_size: Optional[int] = typer.Option(None, help="Global batch size (split across DDP processes)."),
    eval_batch_size: Optional[int] = typer.Option(None),
    drop_last: Optional[bool] = typer.Option(None, "--drop-last/--no-drop-last"),
    optimizer: Optional[str] = typer.Option(None, help="sgd or adamw."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate."),
    momentum: Optional[float] = typer.Option(None),
    nesterov: Optional[bool] = typer.Option(None, "--nesterov/--no-nesterov"),
    weight_decay: Optional[float] = typer.Option(None),
    wd_exclude_bn_bias: Optional[bool] = typer.Option(None, "--wd-exclude-bn-bias/--no-wd-exclude-bn-bias"),
    schedule: Optional[str] = typer.Option(None, help="step, cosine, onecycle or constant."),
    schedule_unit: Optional[str] = typer.Option(None, help="Whether milestones/warmup count epochs or steps."),
    milestones: Optional[str] = typer.Option(None, help="Step schedule: comma-separated, e.g. 32000,48000."),
    gamma: Optional[float] = typer.Option(None, help="Step schedule: lr factor at each milestone."),
    warmup: Optional[float] = typer.Option(None, help="Linear warmup length (one-cycle: the peak position)."),
    min_lr_factor: Optional[float] = typer.Option(None),
    label_smoothing: Optional[float] = typer.Option(None),
    loss: Optional[str] = typer.Option(None, help="Segmentation: ce (per-pixel cross-entropy), dice or ce+dice."),
    grad_clip: Optional[float] = typer.Option(None, help="Clip the global gradient norm to this value."),
    crop_padding: Optional[int] = typer.Option(None),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip"),
    cutout: Optional[int] = typer.Option(None),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment"),
    amp: Optional[str] = typer.Option(None, help="none, bf16, fp16 or auto."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last"),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model."),
    checkpoint_segments: Optional[int] = typer.Option(None, help="Gradient checkpointing in N segments (memory)."),
    sync_bn: Optional[bool] = typer.Option(None, "--sync-bn/--no-sync-bn", help="DDP: SyncBatchNorm."),
    seed: Optional[int] = typer.Option(None),
    val_split: Optional[int] = typer.Option(None, help="Training images held out for validation (he2015: 5000)."),
    test_split: Optional[str] = typer.Option(None, help="Split evaluated as the test set ('none' to skip)."),
    eval_every: Optional[int] = typer.Option(None, help="Epochs between evaluations (0: only at the end)."),
    log_every: Optional[int] = typer.Option(None, help="Steps between metric records."),
    out: Optional[str] = typer.Option(None, help="Run folder to create (refused if it exists, unless --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
    resume: Optional[str] = typer.Option(None, help="Continue this run folder from its latest checkpoint."),
    keep_epoch_checkpoints: Optional[bool] = typer.Option(None, "--keep-epoch-checkpoints/--no-keep-epoch-checkpoints"),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda or cuda:N."),
    num_threads: Optional[int] = typer.Option(None, help="torch intra-op threads."),
    progress: Optional[str] = typer.Option(None, help="auto, bar, lines or none."),
) -> None:
    """Train a model: `skiplab train --model resnet20 --data cifar10 --epochs 30 --out runs/r20`."""
    from skiplab.train import TrainConfig, TrainingDiverged, train
    from skiplab.train.distributed import from_env

    given = {k: v for k, v in dict(
        model=model, model_kwargs=_json_dict("model-kwargs", model_kwargs), data=data, data_dir=data_dir,
        data_options=_json_dict("data-options", data_options), epochs=epochs, max_steps=max_steps,
        batch_size=batch_size, eval_batch_size=eval_batch_size, drop_last=drop_last, optimizer=optimizer, lr=lr,
        momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, wd_exclude_bn_bias=wd_exclude_bn_bias,
        schedule=schedule, schedule_unit=schedule_unit, milestones=_milestones(milestones), gamma=gamma,
        warmup=warmup, min_lr_factor=min_lr_factor, label_smoothing=label_smoothing, loss=loss, grad_clip=grad_clip,
        crop_padding=crop_padding, flip=flip, cutout=cutout, augment=augment, amp=amp, channels_last=channels_last,
        compile=compile, checkpoint_segments=checkpoint_segments, sync_bn=sync_bn, seed=seed, val_split=val_split, test_split=test_split, eval_every=eval_every,
        log_every=log_every, out=out, keep_epoch_checkpoints=keep_epoch_checkpoints, device=device,
        num_threads=num_threads, progress=progress,
    ).items() if v is not None}
    if given.get("test_split") in ("none", ""):
        given["test_split"] = None
    if "max_steps" in given and "epochs" not in given:
        given["epochs"] = None  # the length the user chose; TrainConfig's default epochs=10 was not a choice
    if resume is not None:
        fixed = sorted(set(given) - set(RUNTIME_FIELDS))
        if fixed or recipe or overwrite:
            flags = ", ".join("--" + f.replace("_", "-") for f in fixed + (["recipe"] if recipe else [])
                              + (["overwrite"] if overwrite else []))
            raise ValueError(f"--resume continues {resume} exactly with its saved settings; drop {flags} (only "
                             f"{', '.join('--' + f.replace('_', '-') for f in RUNTIME_FIELDS)} may change)")
        cfg = TrainConfig(resume=resume, **given)
    else:
        if "out" not in given:
            raise ValueError("--out is required: the run folder to create (e.g. --out runs/resnet20)")
        given["overwrite"] = overwrite
        cfg = TrainConfig.from_recipe(recipe, **given) if recipe else TrainConfig(**given)
    try:
        result = train(cfg)
    except TrainingDiverged as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        err_console.print("aborted by a second Ctrl-C: no checkpoint written for the current step; resume from "
                          f"the last one with `skiplab train --resume {cfg.resume or cfg.out}`")
        raise SystemExit(130) from None
    if not from_env().is_main:  # other DDP ranks stay quiet
        return
    if result.status == "interrupted":
        raise SystemExit(130 if result.signal == "SIGINT" else 143)
    f = result.final
    parts = [f"{split} acc {100 * f[f'{split}_acc']:.2f}% loss {f[f'{split}_loss']:.4f}"
             if f.get(f"{split}_miou") is None else _seg_summary(split, f[f"{split}_loss"], f[f"{split}_acc"],
                                                                  f[f"{split}_miou"], f[f"{split}_boundary_f1"])
             for split in ("val", "test") if f.get(f"{split}_acc") is not None]
    console.print(f"done: {f['epoch']} epochs, {f['step']} steps in {f['wall_time_s']:.0f}s; "
                  + ("; ".join(parts) or f"train loss {f['train_loss']:.4f}") + f"; run folder {result.run_dir}",
                  highlight=False)


def _seg_summary(split: str, loss: float, acc: float, miou: float, bf1: float) -> str:
    from skiplab.train.segmentation import BOUNDARY_TOLERANCE

    return (f"{split} mean IoU {100 * miou:.2f}% boundary F1 {100 * bf1:.2f}% ({BOUNDARY_TOLERANCE} px) pixel acc "
            f"{100 * acc:.2f}% loss {loss:.4f}")


@app.command("eval")
def eval_cmd(
    run: Optional[str] = typer.Option(None, help="A run folder (its latest checkpoint) or a checkpoint file."),
    model: Optional[str] = typer.Option(None, help="Model name, with --weights (default: from the file)."),
    weights: Optional[str] = typer.Option(None, help="A weights file (safetensors or a PyTorch state dict)."),
    model_kwargs: Optional[str] = typer.Option(None, help="Model build kwargs as JSON, with --model."),
    data: Optional[str] = typer.Option(None, help="Dataset (default: the run's, or cifar10)."),
    data_dir: Optional[str] = typer.Option(None),
    data_options: Optional[str] = typer.Option(None, help="load_dataset options as JSON (default: the run's)."),
    split: str = typer.Option("test", help="test, train, or val (a run with a validation split)."),
    batch_size: int = typer.Option(500),
    device: str = typer.Option("auto"),
    tta: str = typer.Option("none", help="none, or flip: average the logits of each image and its mirror."),
) -> None:
    """Accuracy and loss of a trained model on a dataset split (segmentation: mean IoU, boundary F1, pixel
    accuracy and per-pixel loss)."""
    from skiplab.data import BatchLoader, load_dataset
    from skiplab.registry import create_model
    from skiplab.train import TrainConfig, evaluate, load_checkpoint, load_model_state, resolve_device

    if (run is None) == (weights is None):
        raise ValueError("give either --run RUN (a run folder or checkpoint) or --weights PATH (with --model)")
    dev = resolve_device(device)
    if run is not None:
        if model or model_kwargs:
            raise ValueError("--model/--model-kwargs go with --weights; a run's checkpoint names its model")
        ckpt = load_checkpoint(run)
        cfg = TrainConfig.from_dict(ckpt.meta["config"])
        net = create_model(ckpt.model_name, **ckpt.model_kwargs)
        load_model_state(net, ckpt)
        source = str(ckpt.path)
    else:
        from skiplab.weights import load_weights, read_weights

        kwargs = _json_dict("model-kwargs", model_kwargs)
        if model is None:
            meta = read_weights(weights)[1]
            if "model_name" not in meta:
                raise ValueError(f"{weights} does not name its model; pass --model NAME (and --model-kwargs)")
            model = meta["model_name"]
            kwargs = json.loads(meta.get("model_kwargs") or "{}") if kwargs is None else kwargs
        net = create_model(model, **(kwargs or {}))
        load_weights(net, weights)
        cfg = TrainConfig()
        source = weights
    name = data or cfg.data
    ddir = data_dir if data_dir is not None else cfg.data_dir
    opts = _json_dict("data-options", data_options)
    if opts is None:
        opts = cfg.data_options if name == cfg.data else {}
    if split == "val":
        if run is None or not cfg.val_split:
            raise ValueError("--split val needs a --run trained with a validation split (--val-split N)")
        ds = load_dataset(name, "train", data_dir=ddir, **opts).split(cfg.val_split, seed=cfg.seed)[1]
    else:
        ds = load_dataset(name, split, data_dir=ddir, **opts)
    loader = BatchLoader(ds, batch_size, shuffle=False, device=dev)
    how = "" if tta == "none" else f" (test-time augmentation: {tta})"
    from skiplab.train.segmentation import check_model_task, evaluate_segmentation

    net.to(dev)
    check_model_task(net, ds.image_shape, ds.task, ds.num_classes, model_name=getattr(net, "model_name", model),
                     data_name=name, device=dev)
    if ds.task == "segmentation":
        m = evaluate_segmentation(net, loader, dev, tta=tta)
        console.print(f"{ds.name}/{split} ({len(ds)} images), {source}: "
                      + _seg_summary(split, m["loss"], m["acc"], m["miou"], m["boundary_f1"]).split(" ", 1)[1] + how,
                      highlight=False)
        return
    loss, acc = evaluate(net, loader, dev, tta=tta)
    console.print(f"{ds.name}/{split} ({len(ds)} images), {source}: accuracy {100 * acc:.2f}%  loss {loss:.4f}{how}",
                  highlight=False)

