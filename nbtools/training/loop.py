"""The model, its optimiser, the training steps and the checkpoints that make a run resumable."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import files
from .config import TrainConfig
from .data import EOT, Batches


def build_model(config: TrainConfig, vocab_size: int, eot: int):
    """A freshly initialised ``GPT2LMHeadModel`` (seeded by ``config.seed``), no dropout, tied
    embeddings, ``eot`` as its bos/eos/pad token."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model_config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        tie_word_embeddings=True,
    )
    torch.manual_seed(config.seed)
    return GPT2LMHeadModel(model_config)


def build_optimizer(model, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the parameters of two or more dimensions only."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=1e-8)


@dataclass
class Progress:
    """How far a run has got: steps done, seconds spent training, the logged loss curve
    (``[step, mean loss]`` pairs) and the losses of the last 100 steps."""

    step: int = 0
    elapsed: float = 0.0
    curve: list = field(default_factory=list)
    recent: list = field(default_factory=list)


def load_checkpoint(path: Path, config: TrainConfig) -> dict | None:
    """The checkpoint at ``path`` (``None`` if there is none); ValueError if it was written
    with other settings."""
    if not path.exists():
        return None
    checkpoint = torch.load(path, weights_only=False)
    if checkpoint["config"] != dataclasses.asdict(config):
        raise ValueError(
            f"{path} was written with other settings; use another --out folder "
            "or delete it to start over."
        )
    return checkpoint


def prepare_model(
    config: TrainConfig, tokenizer, checkpoint: dict | None, log: Callable[[str], object]
):
    """``(model, optimizer, progress)``: fresh, or restored from ``checkpoint``."""
    model = build_model(config, len(tokenizer), tokenizer.convert_tokens_to_ids(EOT))
    optimizer = build_optimizer(model, config)
    progress = Progress()
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        progress = Progress(
            checkpoint["step"], checkpoint["elapsed"], checkpoint["curve"], checkpoint["recent"]
        )
        log(f"resuming from step {progress.step}")
    log(
        f"model: {sum(p.numel() for p in model.parameters()):,} parameters; "
        f"{config.total_steps} steps of {config.batch_size}x{config.seq_len} tokens, "
        f"warm-up {config.effective_warmup}"
    )
    return model, optimizer, progress


def save_checkpoint(path: Path, config: TrainConfig, progress: Progress, model, optimizer):
    """Write the settings, progress, weights and optimiser state atomically to ``path``."""
    state = {
        "config": dataclasses.asdict(config),
        **dataclasses.asdict(progress),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
    }
    with files.atomic_path(path) as tmp:
        torch.save(state, tmp)


def train_steps(
    model,
    optimizer,
    batches: Batches,
    config: TrainConfig,
    progress: Progress,
    checkpoint_path: Path,
    log: Callable[[str], object],
    log_every: int,
    checkpoint_every: int,
) -> Progress:
    """Run the steps from ``progress.step`` to ``config.total_steps``, logging the mean loss
    every ``log_every`` steps and checkpointing every ``checkpoint_every`` (and at the end)."""
    model.train()
    interval_start, interval_losses = time.time(), []
    while progress.step < config.total_steps:
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(progress.step)
        inputs, targets = batches[progress.step]
        logits = model(input_ids=inputs).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        progress.step += 1
        interval_losses.append(loss.item())
        progress.recent = (progress.recent + [interval_losses[-1]])[-100:]
        last = progress.step == config.total_steps
        if progress.step % log_every == 0 or last:
            _log_interval(progress, config, interval_start, interval_losses, log)
            interval_start, interval_losses = time.time(), []
        if progress.step % checkpoint_every == 0 or last:
            save_checkpoint(checkpoint_path, config, progress, model, optimizer)
    return progress


def _log_interval(
    progress: Progress,
    config: TrainConfig,
    interval_start: float,
    losses: list[float],
    log: Callable[[str], object],
) -> None:
    """Add the interval's seconds and mean loss to ``progress`` and log them."""
    seconds = time.time() - interval_start
    progress.elapsed += seconds
    mean = sum(losses) / len(losses)
    progress.curve.append([progress.step, round(mean, 4)])
    log(
        f"step {progress.step}/{config.total_steps} | "
        f"tokens {progress.step * config.tokens_per_step:,} | "
        f"{len(losses) * config.tokens_per_step / seconds:,.0f} tok/s | "
        f"loss {mean:.4f} | lr {config.lr_at(progress.step - 1):.2e}"
    )


def save_weights(model, out: Path, dtype: str) -> None:
    """Write a ``dtype`` copy of ``model`` (weights and configs) into ``out``, file by file
    atomically."""
    with files.atomic_folder_files(out) as staging:
        copy.deepcopy(model).to(getattr(torch, dtype)).save_pretrained(staging)
