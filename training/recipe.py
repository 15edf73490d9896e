"""The training recipe, top to bottom: model -> trainable parts -> data -> optimizer/schedule -> loop -> save.

Runs unchanged under ``llamavid train`` (one process) and ``accelerate launch -m llamavid_eval.training
train`` (data parallel, DeepSpeed ZeRO-2/3 or FSDP as the accelerate config says).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from llamavid_eval.model.loading import load_llamavid, torch_dtype
from llamavid_eval.training.checkpointing import (
    Progress,
    keep_trainable_only,
    load_checkpoint,
    resume_dir,
    save_checkpoint,
    save_final,
)
from llamavid_eval.training.config import TrainConfig
from llamavid_eval.training.data import Collator, EpochShuffleSampler, load_datasets
from llamavid_eval.training.metrics import RunLogger, trackers
from llamavid_eval.training.params import (
    TrainingModule,
    configure_trainable,
    enable_gradient_checkpointing,
    module_base,
    trainable_parameters,
    upcast_trainable,
)
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup


@dataclass
class TrainingRun:
    """The saved output folder and the trained in-memory module (unwrapped)."""

    output: Path
    module: TrainingModule
    progress: Progress


def train(config: TrainConfig) -> Path:
    """Train as ``config`` says; return the output checkpoint (released layout) or LoRA adapter folder."""
    return run_training(config).output


def run_training(config: TrainConfig) -> TrainingRun:
    config.validate()
    output = Path(config.output_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with=trackers(config) or None,
        project_dir=str(output),
    )
    set_seed(config.seed)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        (output / "train_config.yaml").write_text(config.to_yaml(), encoding="utf-8")
        print(f"llamavid training config ({accelerator.num_processes} process(es), {accelerator.distributed_type}):\n"
              + config.to_yaml(), flush=True)

    # Model and what trains. DeepSpeed/FSDP place (and shard) the weights themselves at prepare().
    sharded = accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)
    loaded = load_llamavid(
        config.base, vision_tower=config.vision_tower, qformer=config.qformer,
        qformer_tokenizer=config.qformer_tokenizer, dtype=torch_dtype(config.load_dtype),
        device="cpu" if sharded else accelerator.device, attn_implementation=config.attn_implementation,
    )
    model = configure_trainable(loaded.model, config)
    if config.load_dtype != "float32":
        upcast_trainable(model)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    module = TrainingModule(model)

    # Data: lengths are checked here, before any step; over-long records are skipped and listed.
    tokens_per_frame = loaded.model.config.tokens_per_frame
    train_set, eval_set, skipped = load_datasets(config, loaded.tokenizer, loaded.image_processor, tokens_per_frame)
    if accelerator.is_main_process:
        (output / "skipped_examples.json").write_text(json.dumps(skipped, indent=1), encoding="utf-8")
        print(f"data: {len(train_set)} training examples, {len(eval_set or [])} evaluation examples, "
              f"{len(skipped)} skipped as longer than max_length={config.max_length} (skipped_examples.json)")
    collate = Collator(loaded.qformer_tokenizer)
    loader_args = {"batch_size": config.per_device_batch_size, "collate_fn": collate,
                   "num_workers": config.num_workers, "pin_memory": torch.cuda.is_available()}
    train_loader = DataLoader(train_set, sampler=EpochShuffleSampler(len(train_set), config.seed), **loader_args)
    eval_loader = DataLoader(eval_set, shuffle=False, **loader_args) if eval_set else None

    # Optimizer (no decay on biases and norms, as transformers' Trainer) and the cosine schedule.
    named = list(trainable_parameters(module))
    groups = [{"params": [p for _, p in named if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for _, p in named if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, betas=tuple(config.adam_betas),
                                  eps=config.adam_epsilon)
    module, optimizer, train_loader = accelerator.prepare(module, optimizer, train_loader)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)
    steps_per_epoch = math.ceil(len(train_loader) / config.gradient_accumulation_steps)
    total_steps = config.max_steps or steps_per_epoch * config.num_epochs
    # Built on the prepared optimizer and stepped once per optimizer step (not through prepare(), which
    # would step it once per process).
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)
    accelerator.register_for_checkpointing(scheduler)
    keep_trainable_only(accelerator)

    progress = Progress()
    start_from = resume_dir(config, output)
    if start_from is not None:
        progress = load_checkpoint(accelerator, start_from)
        if progress.batches >= len(train_loader):
            progress = Progress(progress.step, progress.epoch + 1, 0)
    logger = RunLogger(accelerator, output, config, resumed=start_from is not None)
    trained = sum(p.numel() for _, p in named)
    logger.info(f"trainable parameters: {trained / 1e6:.2f}M ({config.method}); {total_steps} optimizer steps "
                f"({steps_per_epoch} per epoch); " + (f"resuming at step {progress.step} from {start_from}"
                                                      if start_from else "starting at step 0"))

    bar = tqdm(total=total_steps, initial=progress.step, disable=not accelerator.is_main_process, desc="train")
    set_train_mode(module, accelerator)
    window = {"loss": torch.zeros((), device=accelerator.device), "micro": 0,
              "tokens": torch.zeros((), device=accelerator.device), "since": time.perf_counter()}
    grad_norm = None
    while progress.step < total_steps:
        train_loader.set_epoch(progress.epoch)
        epoch_loader = train_loader
        if progress.batches:  # resumed mid-epoch: same order, first batches skipped
            epoch_loader = accelerator.skip_first_batches(train_loader, progress.batches)
            epoch_loader.set_epoch(progress.epoch)
        for batch in epoch_loader:
            # Randomness (dropout) depends only on (seed, step, micro-batch, process): resume reproduces it.
            torch.manual_seed(hash((config.seed, progress.step, progress.batches, accelerator.process_index)) % 2**63)
            tokens = batch.pop("num_tokens")
            batch.pop("num_label_tokens")
            with accelerator.accumulate(module):
                loss = module(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    grad_norm = accelerator.clip_grad_norm_(module.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            progress.batches += 1
            window["loss"] += loss.detach().float()
            window["micro"] += 1
            window["tokens"] += tokens.to(accelerator.device)
            if not accelerator.sync_gradients:
                continue

            lr = scheduler.get_last_lr()[0]  # the rate this step used
            scheduler.step()
            progress.step += 1
            bar.update(1)
            if progress.step % config.log_every == 0 or progress.step == total_steps:
                loss_mean = accelerator.reduce(window["loss"] / window["micro"], "mean").item()
                tokens_all = accelerator.reduce(window["tokens"], "sum").item()
                seconds = time.perf_counter() - window["since"]
                logger.log(progress.step, {
                    "epoch": progress.epoch, "loss": loss_mean, "lr": lr,
                    "grad_norm": float(grad_norm) if grad_norm is not None else None,
                    "tokens_per_s": tokens_all / seconds, "seconds": seconds,
                })
                bar.set_postfix(loss=f"{loss_mean:.4f}", lr=f"{lr:.2e}")
                window.update(loss=torch.zeros_like(window["loss"]), micro=0,
                              tokens=torch.zeros_like(window["tokens"]), since=time.perf_counter())
            if eval_loader is not None and config.eval_every and progress.step % config.eval_every == 0:
                logger.log(progress.step, {"eval_loss": evaluate(accelerator, module, eval_loader)})
            if config.save_every and progress.step % config.save_every == 0 and progress.step < total_steps:
                save_checkpoint(accelerator, output, progress, config.keep_checkpoints)
            if progress.step >= total_steps:
                break
        else:
            progress = Progress(progress.step, progress.epoch + 1, 0)
    bar.close()

    if eval_loader is not None and not (config.eval_every and progress.step % config.eval_every == 0):
        logger.log(progress.step, {"eval_loss": evaluate(accelerator, module, eval_loader)})
    final = save_final(accelerator, module, config, loaded, output)
    logger.info(f"saved {'LoRA adapter' if config.method == 'lora' else 'checkpoint'} to {final}")
    accelerator.end_training()
    return TrainingRun(final, accelerator.unwrap_model(module).eval(), progress)


def set_train_mode(module: torch.nn.Module, accelerator: Accelerator) -> None:
    """Train mode (dropout on) everywhere except the frozen vision tower."""
    module.train()
    module_base(accelerator.unwrap_model(module)).vision_tower.eval()


@torch.no_grad()
def evaluate(accelerator: Accelerator, module: torch.nn.Module, loader: DataLoader) -> float:
    """Loss over every answer token of the evaluation set (token-weighted across batches and processes)."""
    module.eval()
    total = torch.zeros((), device=accelerator.device)
    count = torch.zeros((), device=accelerator.device)
    for batch in loader:
        batch.pop("num_tokens")
        targets = batch.pop("num_label_tokens").to(accelerator.device)
        total += module(**batch).loss.float() * targets
        count += targets
    set_train_mode(module, accelerator)
    return (accelerator.reduce(total, "sum") / accelerator.reduce(count, "sum").clamp(min=1)).item()
