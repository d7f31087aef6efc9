"""Deterministic training of the mini zoo on generated shapes; writes ``weights/NAME.pt`` and ``NAME.json``.

Recipe (every net): Adam with a one-cycle learning-rate schedule, batch 64, cross-entropy on logits,
fresh images every epoch (epoch ``e`` uses ``shapes(12000, seed=TRAIN_SEED + e)``), then accuracy on a test
split drawn from a seed never used in training (:data:`TEST_SEED`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import IMAGE_SIZE, SHAPE_CLASSES, shapes
from . import WEIGHTS_DIR, build

TRAIN_SEED = 1000  # epoch e trains on shapes(..., seed=TRAIN_SEED + e); seeds 1000-1099 are kept for training
TEST_SEED = 777
TEST_IMAGES = 4000
TORCH_SEED = 0


@dataclass(frozen=True)
class Recipe:
    """Training hyper-parameters recorded in the card."""

    epochs: int = 8
    images_per_epoch: int = 12000
    batch_size: int = 64
    max_lr: float = 3e-3
    weight_decay: float = 0.0
    optimizer: str = "Adam + OneCycleLR"


RECIPES: dict[str, Recipe] = {"mini_vgg": Recipe(), "mini_vgg_bn": Recipe(), "mini_resnet": Recipe(),
                               "mini_vgg_fc": Recipe(max_lr=1e-3)}  # at 3e-3 its plain FC head stayed at chance

DESCRIPTIONS = {
    "mini_vgg": "VGG-style, plain (no BatchNorm): conv-ReLU 16-32-64x2-128x2, max-pool per block, "
    "global max-pool, linear. Mirrors VGG-19.",
    "mini_vgg_bn": "VGG-style with BatchNorm: conv-BN-ReLU 16-32-64x2-128x2, max-pool per block, "
    "global max-pool, linear. Mirrors VGG-19-BN.",
    "mini_resnet": "ResNet-style: stem conv-BN-ReLU-maxpool (16), one basic block per stage (32, 64, 128), "
    "global average pool, linear. Mirrors ResNet-101.",
    "mini_vgg_fc": "VGG-style, plain (no BatchNorm), with VGG's fully connected head: conv-ReLU 16-32-64x2-128x2, "
    "max-pool per block, flatten (4x4x128), linear-ReLU x2 (128 units), linear. Mirrors VGG-19 with its three "
    "biased linear layers (no dropout).",
}


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` (put in eval mode) on the given images."""
    model.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        correct += (model(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum().item()
    return correct / max(len(images), 1)


def train(
    name: str,
    recipe: Recipe | None = None,
    out_dir: Path = WEIGHTS_DIR,
    progress: bool = True,
    test_images: int = TEST_IMAGES,
) -> dict[str, Any]:
    """Train one zoo net from scratch, save its state_dict and card in ``out_dir``, return the card."""
    return train_many([name], {name: recipe or RECIPES[name]}, out_dir, progress, test_images)[name]


def train_many(
    names: list[str],
    recipes: dict[str, Recipe] | None = None,
    out_dir: Path = WEIGHTS_DIR,
    progress: bool = True,
    test_images: int = TEST_IMAGES,
) -> dict[str, dict[str, Any]]:
    """Train several nets side by side, epoch by epoch, so each epoch's images are generated once for all.

    Each net has its own seeded initialisation, optimiser, schedule and shuffling generator, and nothing
    draws from the global random state while training, so the weights equal those of training it alone.
    """
    recipes = {n: (recipes or {}).get(n, RECIPES[n]) for n in names}
    shapes_of = {(r.epochs, r.images_per_epoch) for r in recipes.values()}
    if len(shapes_of) > 1:  # different data schedules: one after the other
        return {n: train(n, recipes[n], out_dir, progress, test_images) for n in names}
    epochs, images_per_epoch = shapes_of.pop()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = [_Run(n, recipes[n], progress) for n in names]
        for epoch in range(epochs):
            data = shapes(images_per_epoch, seed=TRAIN_SEED + epoch)
            for run in runs:
                run.epoch(data, epoch)
        for run in runs:
            run.close()
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    test = shapes(test_images, seed=TEST_SEED)
    return {run.name: _save(run, test, test_images, out_dir) for run in runs}


def _save(run: _Run, test, test_images: int, out_dir: Path) -> dict[str, Any]:
    acc = accuracy(run.model, test.images, test.labels)
    card = _card(run.name, run.model, run.recipe, acc, run.seconds, test_images)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.detach().float() if v.is_floating_point() else v).contiguous()
        for k, v in run.model.state_dict().items()
    }
    torch.save(state, out_dir / f"{run.name}.pt")
    card["file_bytes"] = (out_dir / f"{run.name}.pt").stat().st_size
    (out_dir / f"{run.name}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


class _Run:
    """One net's training state: seeded initialisation, optimiser, schedule, shuffling generator."""

    def __init__(self, name: str, recipe: Recipe, progress: bool):
        self.name, self.recipe, self.seconds = name, recipe, 0.0
        with torch.random.fork_rng(devices=[]):  # leaves the caller's random state alone
            torch.manual_seed(TORCH_SEED)
            self.model = build(name)
        self.model.to(memory_format=torch.channels_last)  # about a third faster on CPU; same maths
        self.steps_per_epoch = -(-recipe.images_per_epoch // recipe.batch_size)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=recipe.max_lr,
                                          weight_decay=recipe.weight_decay)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=recipe.max_lr, total_steps=recipe.epochs * self.steps_per_epoch
        )
        self.loss_fn = nn.CrossEntropyLoss()
        self.order = torch.Generator().manual_seed(TORCH_SEED)
        self.bar = tqdm(total=recipe.epochs * self.steps_per_epoch, desc=name, disable=not progress, unit="batch")

    def epoch(self, data, epoch: int) -> None:
        start = time.perf_counter()
        perm = torch.randperm(len(data.labels), generator=self.order)
        self.model.train()
        correct, seen = 0, 0
        for i in range(0, len(perm), self.recipe.batch_size):
            idx = perm[i : i + self.recipe.batch_size]
            x, y = data.images[idx].contiguous(memory_format=torch.channels_last), data.labels[idx]
            logits = self.model(x)
            loss = self.loss_fn(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.schedule.step()
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            self.bar.update(1)
            self.bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", train_acc=f"{correct / seen:.3f}")
        self.seconds += time.perf_counter() - start

    def close(self) -> None:
        self.bar.close()
        self.model.to(memory_format=torch.contiguous_format)


def _card(
    name: str, model: nn.Module, recipe: Recipe, acc: float, train_time: float, test_images: int
) -> dict[str, Any]:
    return {
        "name": name,
        "architecture": DESCRIPTIONS[name],
        "parameters": sum(p.numel() for p in model.parameters()),
        "class_names": list(SHAPE_CLASSES),
        "input": f"raw RGB in [0, 1], 3x{IMAGE_SIZE}x{IMAGE_SIZE}; centring is a fixed layer inside the net",
        "normalization": [list(v) for v in model.preprocessing.normalization],
        "block_layers": dict(model.block_layers),
        "data": {
            "generator": "pwawidgets.data.shapes",
            "train_seeds": [TRAIN_SEED + e for e in range(recipe.epochs)],
            "images_per_epoch": recipe.images_per_epoch,
            "test_seed": TEST_SEED,
            "test_images": test_images,
        },
        "torch_seed": TORCH_SEED,
        "recipe": asdict(recipe),
        "epochs": recipe.epochs,
        "test_accuracy": round(acc, 4),
        "train_time_s": round(train_time, 1),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
