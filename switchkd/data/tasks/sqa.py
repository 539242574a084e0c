"""sqa-lite (ScienceQA-IMG): diagram questions that need the text context plus perception.

Three templates from real ScienceQA families (``meta["template"]``): magnets (attract / repel,
2 options), solution concentration (particles per volume, 3 options) and polygon sides (sum
of sides, 4 options). The context sentence is part of the question text, as in ScienceQA.
"""

from __future__ import annotations

import random

from switchkd.data.scenes import COLORS, Background, Canvas
from switchkd.data.tasks.common import (Context, EvalItem, TrainExample, balanced, maybe_caption,
                                        mc_options, mc_turn, np_rng, numeric_distractors,
                                        pick_font, place)

TEMPLATES = ("magnets", "concentration", "polygons")
N_OPTIONS = {"magnets": 2, "concentration": 3, "polygons": 4}
SAME = "neither; their concentrations are the same"
POLYGONS = ("triangle", "square", "pentagon", "hexagon")
SIDES = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}
PAPER = (236, 236, 228)


def _paper(rng: random.Random) -> Background:
    return Background("plain", color=tuple(c + rng.randint(-12, 12) for c in PAPER))


def _magnets(rng: random.Random, ctx: Context):
    canvas = Canvas(ctx.size, _paper(rng), ctx.assets)
    font = pick_font(rng, ctx)
    vertical = rng.random() < 0.5
    poles = [rng.choice(("NS", "SN")) for _ in range(2)]
    thick, gap = rng.uniform(0.26, 0.32), rng.uniform(0.06, 0.14)
    half = (1 - 0.08 - gap) / 4  # four pole halves plus the gap across the image
    start = 0.04
    for magnet in poles:
        for pole in magnet:
            color = COLORS["red"] if pole == "N" else COLORS["blue"]
            lo, hi = start, start + half
            box = (0.5 - thick / 2, lo, 0.5 + thick / 2, hi) if vertical else \
                (lo, 0.5 - thick / 2, hi, 0.5 + thick / 2)
            canvas.rect(*box, fill=color, outline=(20, 20, 20), width=0.015)
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            canvas.text(pole, cx, cy, 0.7 * min(half, thick), font, (255, 255, 255))
            start = hi
        start += gap
    facing = (poles[0][1], poles[1][0])
    answer = "attract" if facing[0] != facing[1] else "repel"
    context = "Context: Opposite magnetic poles attract and like poles repel."
    question = f"{context}\nWill these magnets attract or repel each other?"
    aux = [("Are the facing poles the same or different?",
            "same" if facing[0] == facing[1] else "different")]
    return canvas.to_array(np_rng(rng), 3.0), question, answer, ["attract", "repel"], aux, \
        "two magnets"


def _concentration(rng: random.Random, ctx: Context):
    canvas = Canvas(ctx.size, _paper(rng), ctx.assets)
    outcome = rng.choice(("A", "B", "same"))
    a = rng.randint(1, 6)
    b = a if outcome == "same" else rng.randint(1, 6)
    while outcome != "same" and (b == a or (a > b) != (outcome == "A")):
        a, b = rng.randint(1, 6), rng.randint(1, 6)
    volume = rng.choice((20, 25, 30, 40, 50))
    dot = (110, 25, 160)
    for x0, count in ((0.06, a), (0.54, b)):
        x1, top, level, bottom = x0 + 0.4, 0.18, rng.uniform(0.34, 0.4), 0.92
        canvas.rect(x0, level, x1, bottom, fill=(170, 210, 240))
        canvas.line([(x0, top), (x0, bottom), (x1, bottom), (x1, top)], (40, 40, 40), 0.025)
        r = 0.035
        centres = None
        while centres is None:
            centres = place(rng, [r] * count, gap=0.03, border=0.0)
        for cx, cy in centres:  # map the unit square into the liquid
            canvas.ellipse(x0 + 0.04 + cx * 0.32, level + 0.04 + cy * (bottom - level - 0.08),
                           r, r, dot)
    answer = {"A": "Solution A", "B": "Solution B", "same": SAME}[outcome]
    context = (f"Context: Solution A (left) and Solution B (right) each have {volume} mL of "
               "water.")
    question = f"{context}\nWhich solution has a higher concentration of purple particles?"
    aux = [("How many purple particles are in Solution A?", str(a)),
           ("How many purple particles are in Solution B?", str(b))]
    return canvas.to_array(np_rng(rng), 3.0), question, answer, \
        ["Solution A", "Solution B", SAME], aux, "two solutions"


def _polygons(rng: random.Random, ctx: Context):
    canvas = Canvas(ctx.size, _paper(rng), ctx.assets)
    shapes = [rng.choice(POLYGONS) for _ in range(rng.randint(1, 2))]
    radii = [rng.uniform(0.17, 0.21) for _ in shapes]
    centres = None
    while centres is None:
        centres = place(rng, radii, gap=0.05)
    colors = rng.sample(["red", "green", "blue", "orange", "purple"], len(shapes))
    for shape, (x, y), r, c in zip(shapes, centres, radii, colors):
        canvas.shape(shape, COLORS[c], x, y, r)
    total = sum(SIDES[s] for s in shapes)
    context = "Context: A triangle has 3 sides, a square 4, a pentagon 5 and a hexagon 6."
    question = f"{context}\nHow many sides do the shapes have in total?"
    distractors = numeric_distractors(rng, total, 3)
    ordered = [s for _, s in sorted(zip(centres, shapes))]
    aux = [("How many shapes are there?", str(len(shapes))),
           ("What shape is on the left?" if len(shapes) > 1 else "What shape is this?",
            ordered[0])]
    return canvas.to_array(np_rng(rng), 3.0), question, str(total), distractors, aux, \
        " , ".join(ordered)


def _make(rng: random.Random, ctx: Context, template: str):
    """(image, question, correct option, all options or distractors, train QAs, caption)."""
    return {"magnets": _magnets, "concentration": _concentration,
            "polygons": _polygons}[template](rng, ctx)


def _arrange(rng: random.Random, template: str, correct: str, options: list[str], target: int):
    distractors = [o for o in options if o != correct]
    return mc_options(rng, correct, distractors, target)


def train_example(rng: random.Random, ctx: Context) -> TrainExample:
    template = rng.choice(TEMPLATES)
    image, question, correct, options, aux, text = _make(rng, ctx, template)
    opts, letter = _arrange(rng, template, correct, options, rng.randrange(N_OPTIONS[template]))
    rng.shuffle(aux)
    # One extra QA at most: the context makes sqa turns the longest of the suite.
    return TrainExample(image, [mc_turn(question, opts, letter)] + aux[:rng.randint(0, 1)],
                        maybe_caption(rng, text))


def eval_items(rng: random.Random, ctx: Context, n: int) -> list[EvalItem]:
    templates = [TEMPLATES[t] for t in balanced(rng, n, len(TEMPLATES))]
    targets = {t: iter(balanced(rng, templates.count(t), N_OPTIONS[t])) for t in TEMPLATES}
    items = []
    for template in templates:
        image, question, correct, options, _, _ = _make(rng, ctx, template)
        opts, letter = _arrange(rng, template, correct, options, next(targets[template]))
        items.append(EvalItem(image, question, letter, options=opts,
                              meta={"template": template}))
    return items
