"""mmmu-lite (MMMU): deliberately hard multi-step multiple choice.

Kinds (``meta["kind"]``): bar_max and bar_diff (bar charts with unit gridlines), digit_sum and
digit_diff (arithmetic over two real handwritten sklearn digits, index-split between train and
val/test), line_trend (shape of a line plot). Expected near chance for a small student, like
real MMMU at 0.5B.
"""

from __future__ import annotations

import random

import numpy as np

from switchkd.data.scenes import COLORS, Background, Canvas
from switchkd.data.tasks.common import (Context, EvalItem, TrainExample, balanced, maybe_caption,
                                        mc_options, mc_turn, np_rng, numeric_distractors)

KINDS = ("bar_max", "bar_diff", "digit_sum", "digit_diff", "line_trend")
BAR_COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
TRENDS = ("increasing", "decreasing", "increases then decreases", "decreases then increases")
X0, X1, Y0, Y1 = 0.12, 0.95, 0.08, 0.9  # plot area
GRID = (185, 185, 185)
AXIS = (30, 30, 30)


def _axes(canvas: Canvas, units: int) -> None:
    for u in range(1, units + 1):
        y = Y1 - (Y1 - Y0) * u / units
        canvas.line([(X0, y), (X1, y)], GRID, 0.012)
    canvas.line([(X0, Y0), (X0, Y1), (X1, Y1)], AXIS, 0.025)


def _digit(rng: random.Random, ctx: Context) -> tuple[np.ndarray | None, int]:
    if ctx.assets.digits is None:
        return None, rng.randrange(10)
    images, labels = ctx.assets.digits[ctx.pool]
    i = rng.randrange(len(labels))
    return images[i].astype(np.float32) / 16.0, int(labels[i])


def _make(rng: random.Random, ctx: Context, kind: str):
    """(image, question, correct option, 3 distractors, train QAs, caption)."""
    paper = tuple(c + rng.randint(-10, 10) for c in (238, 238, 232))
    canvas = Canvas(ctx.size, Background("plain", color=paper), ctx.assets)
    if kind in ("bar_max", "bar_diff"):
        units = 6
        colors = rng.sample(BAR_COLORS, 4)
        while True:
            values = [rng.randint(1, units) for _ in colors]
            if values.count(max(values)) == 1:
                break
        _axes(canvas, units)
        width = (X1 - X0) / 4
        for i, (c, v) in enumerate(zip(colors, values)):
            x = X0 + width * i + 0.03
            canvas.rect(x, Y1 - (Y1 - Y0) * v / units, x + width - 0.05, Y1, fill=COLORS[c])
        aux = [(f"What is the value of the {c} bar?", str(v))
               for c, v in rng.sample(list(zip(colors, values)), 2)]
        if kind == "bar_max":
            correct = colors[values.index(max(values))]
            return (canvas, "Which category has the largest value?", correct,
                    [c for c in colors if c != correct], aux, "a bar chart")
        i, j = rng.sample(range(4), 2)
        if values[i] < values[j]:
            i, j = j, i
        diff = values[i] - values[j]
        question = f"What is the {colors[i]} value minus the {colors[j]} value?"
        return canvas, question, str(diff), numeric_distractors(rng, diff, 0), aux, "a bar chart"
    if kind in ("digit_sum", "digit_diff"):
        digits = [_digit(rng, ctx) for _ in range(2)]
        ink = (25, 25, 25)
        for (img, label), x0 in zip(digits, (0.04, 0.52)):
            box = (x0, 0.18, x0 + 0.44, 0.82)
            if img is None:
                canvas.text(str(label), x0 + 0.22, 0.5, 0.5, ctx.assets.fonts[ctx.pool][0], ink)
            else:
                canvas.gray_image(img, box, ink, None)
        a, b = digits[0][1], digits[1][1]
        aux = [("What is the left number?", str(a)), ("What is the right number?", str(b))]
        text = f"handwritten digits {a} and {b}"
        if kind == "digit_sum":
            return (canvas, "What is the sum of the two numbers?", str(a + b),
                    numeric_distractors(rng, a + b, 0), aux, text)
        return (canvas, "What is the larger number minus the smaller number?", str(abs(a - b)),
                numeric_distractors(rng, abs(a - b), 0), aux, text)
    trend = rng.choice(TRENDS)
    _axes(canvas, 4)
    xs = [X0 + 0.05 + (X1 - X0 - 0.1) * i / 4 for i in range(5)]
    steps = sorted(rng.uniform(0.12, 0.78) for _ in range(5))
    if trend == "decreasing":
        steps = steps[::-1]
    elif trend == "increases then decreases":
        steps = [steps[0], steps[2], steps[4], steps[3], steps[1]]
    elif trend == "decreases then increases":
        steps = [steps[4], steps[2], steps[0], steps[1], steps[3]]
    ys = [Y1 - (Y1 - Y0) * s for s in steps]
    canvas.line(list(zip(xs, ys)), COLORS["blue"], 0.035)
    aux = [("Is the last point higher than the first point?", "yes" if ys[-1] < ys[0] else "no")]
    return (canvas, "How does the function change from left to right?", trend,
            [t for t in TRENDS if t != trend], aux, "a line plot")


def train_example(rng: random.Random, ctx: Context) -> TrainExample:
    canvas, question, correct, distractors, aux, text = _make(rng, ctx, rng.choice(KINDS))
    options, letter = mc_options(rng, correct, distractors, rng.randrange(4))
    image = canvas.to_array(np_rng(rng), 3.0)
    rng.shuffle(aux)
    return TrainExample(image, [mc_turn(question, options, letter)] + aux[:rng.randint(0, 2)],
                        maybe_caption(rng, text))


def eval_items(rng: random.Random, ctx: Context, n: int) -> list[EvalItem]:
    items = []
    for k, target in zip(balanced(rng, n, len(KINDS)), balanced(rng, n, 4)):
        canvas, question, correct, distractors, _, _ = _make(rng, ctx, KINDS[k])
        options, letter = mc_options(rng, correct, distractors, target)
        items.append(EvalItem(canvas.to_array(np_rng(rng), 3.0), question, letter,
                              options=options, meta={"kind": KINDS[k]}))
    return items
