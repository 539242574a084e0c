"""Dense per-cell labels for pretraining the vision encoder (the stand-in for SigLIP's pretraining).

The paper's teacher and student share a *pretrained* SigLIP; ours are built from config, and a
vision encoder trained only through a from-scratch language model learns little more than global
image statistics (docs/RESULTS.md, issue #5). This module generates scenes from the same engine as
MiniVL-10's train split (train photo pool, train fonts, train scene-text strings) and labels each
cell of the ``G x G`` visual-token grid with what is centred in it:

* ``shape``: the shape whose centre lies in the cell (``0`` = none, else ``1 + SHAPES`` index);
* ``color``: that object's colour, or the colour of the sign a character sits on
  (``0`` = none, else ``1 + COLOR_NAMES`` index);
* ``char``: the scene-text character centred in the cell (``0`` = none, else
  ``1 + GRID_CHARS`` index).

Only train pools are used, so val/test hold-outs (photos, fonts, strings) stay unseen. The
labels are exact: they come from the scene graph that drew the image, not from a model.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from switchkd.data.assets import Assets
from switchkd.data.scenes import SHAPES, Scene, Sign, render
from switchkd.data.tasks.common import (COLOR_NAMES, SIGN_INK, Context, make_objects, np_rng,
                                        ocr_strings, pick_font, sample_background, sign_numbers)

GRID_CHARS = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
LABEL_CLASSES = {"shape": 1 + len(SHAPES), "color": 1 + len(COLOR_NAMES),
                 "char": 1 + len(GRID_CHARS)}
SIGN_COLORS = ("white", "yellow", "orange", "green", "red", "blue", "purple")
# A centred 2-character string drawn at most 0.84 of the sign's width puts each character's
# centre about this fraction of the sign's width left/right of the sign's centre.
CHAR_OFFSET = 0.21


@dataclass
class GridBatch:
    images: np.ndarray  # (B, S, S, 3) uint8
    labels: dict[str, np.ndarray]  # name -> (B, G * G) int64, row-major cells


def _cell(x: float, y: float, grid: int) -> int:
    """Row-major index of the grid cell containing the point (x, y) (fractions of the side)."""
    col = min(grid - 1, max(0, int(x * grid)))
    row = min(grid - 1, max(0, int(y * grid)))
    return row * grid + col


def _no_labels(grid: int) -> dict[str, np.ndarray]:
    return {name: np.zeros(grid * grid, dtype=np.int64) for name in LABEL_CLASSES}


def _object_scene(rng: random.Random, ctx: Context, grid: int):
    n = rng.randint(1, 5)
    specs = [(rng.choice(SHAPES), rng.choice(COLOR_NAMES)) for _ in range(n)]
    objects = make_objects(rng, specs)
    labels = _no_labels(grid)
    for obj in objects:  # back to front: a later object in the same cell wins, as it is drawn on top
        cell = _cell(obj.x, obj.y, grid)
        labels["shape"][cell] = 1 + SHAPES.index(obj.shape)
        labels["color"][cell] = 1 + COLOR_NAMES.index(obj.color)
    bg = sample_background(rng, ctx, kinds=("plain", "photo", "stripes"))
    return Scene(bg, objects, []), labels


def _sign_scene(rng: random.Random, ctx: Context, grid: int):
    strings = ocr_strings(ctx.pool) + sign_numbers(ctx.pool)
    n = rng.randint(1, 2)
    font = pick_font(rng, ctx)
    if n == 1:
        ys, h = [rng.uniform(0.3, 0.7)], rng.uniform(0.4, 0.54)
    else:
        ys, h = [rng.uniform(0.22, 0.27), rng.uniform(0.73, 0.78)], rng.uniform(0.38, 0.42)
    labels = _no_labels(grid)
    signs = []
    for y, color in zip(ys, rng.sample(SIGN_COLORS, n)):
        text = rng.choice(strings)
        sign = Sign(rng.uniform(0.42, 0.58), y, rng.uniform(0.74, 0.9), h, color, text, font,
                    SIGN_INK[color])
        signs.append(sign)
        for char, dx in zip(text, (-CHAR_OFFSET, CHAR_OFFSET)):
            cell = _cell(sign.x + dx * sign.w, sign.y, grid)
            labels["char"][cell] = 1 + GRID_CHARS.index(char)
            labels["color"][cell] = 1 + COLOR_NAMES.index(color)
    bg = sample_background(rng, ctx, kinds=("photo", "plain"))
    return Scene(bg, [], signs), labels


def grid_batch(assets: Assets, *, size: int, grid: int, n: int, seed: int, index: int,
               sign_fraction: float = 0.35) -> GridBatch:
    """``n`` labelled scenes, deterministic in (seed, index); train pools only."""
    rng = random.Random(f"vision-pretrain-{seed}-{index}")
    ctx = Context(assets, size, "train", seed)
    images, labels = [], {name: [] for name in LABEL_CLASSES}
    for _ in range(n):
        make = _sign_scene if rng.random() < sign_fraction else _object_scene
        scene, cell_labels = make(rng, ctx, grid)
        images.append(render(scene, assets, size, np_rng(rng)))
        for name, value in cell_labels.items():
            labels[name].append(value)
    return GridBatch(np.stack(images), {k: np.stack(v) for k, v in labels.items()})
