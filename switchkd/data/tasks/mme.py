"""mme-lite (MME): every image gets two yes/no questions, one true and one false.

Five subtasks (``meta["subtask"]``): existence, count, position, color, ocr. The evaluator pairs
the two questions of an image through ``meta["image_id"]`` for MME's acc+.
"""

from __future__ import annotations

import random

from switchkd.data.scenes import SHAPES, Scene, Sign, render
from switchkd.data.tasks.common import (COLOR_NAMES, PLURAL, YES_NO_SUFFIX, Context, EvalItem,
                                        TrainExample, article, balanced, caption, distinct_specs,
                                        localisation_qas, make_objects, maybe_caption, np_rng,
                                        pick_font, relation, sample_background, sign_numbers)

SUBTASKS = ("existence", "count", "position", "color", "ocr")
REL_PHRASE = {"left": "to the left of", "right": "to the right of", "above": "above",
              "below": "below"}
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}


def _image(rng: random.Random, ctx: Context, subtask: str):
    """(image, true question, false question, extra train QAs, caption text)."""
    bg = sample_background(rng, ctx)
    signs: list[Sign] = []
    aux: list[tuple[str, str]] = []
    if subtask == "existence":
        specs = distinct_specs(rng, rng.randint(2, 4), unique_shapes=False, unique_colors=False)
        objects = make_objects(rng, specs)
        shape, color = rng.choice(specs)
        absent = [(s, c) for s in SHAPES for c in COLOR_NAMES if (s, c) not in specs]
        near = [(s, c) for s, c in absent if s == shape or c == color]
        neg_shape, neg_color = rng.choice(near if near and rng.random() < 0.5 else absent)
        yes_q = f"Is there {article(color)} {color} {shape} in the image?"
        no_q = f"Is there {article(neg_color)} {neg_color} {neg_shape} in the image?"
        aux.append(("How many objects are there?", str(len(objects))))
    elif subtask == "count":
        shape = rng.choice(SHAPES)
        # The true and the false count are an adjacent pair drawn uniformly from 1..4, each
        # equally likely to be the truth: the number asked carries no prior about yes/no.
        low = rng.randint(1, 3)
        k, wrong = (low, low + 1) if rng.random() < 0.5 else (low + 1, low)
        specs = [(shape, rng.choice(COLOR_NAMES)) for _ in range(k)]
        others = [s for s in SHAPES if s != shape]
        specs += [(rng.choice(others), rng.choice(COLOR_NAMES)) for _ in range(rng.randint(0, 1))]
        objects = make_objects(rng, specs)
        yes_q = f"Is the number of {PLURAL[shape]} in the image {k}?"
        no_q = f"Is the number of {PLURAL[shape]} in the image {wrong}?"
        aux.append((f"How many {PLURAL[shape]} are there?", str(k)))
    elif subtask == "position":
        while True:
            objects = make_objects(rng, distinct_specs(rng, 2))
            rels = relation(objects[0], objects[1], margin=0.2)
            if rels:
                break
        a, b = objects
        rel = rng.choice(rels)
        yes_q = f"Is the {a.name} {REL_PHRASE[rel]} the {b.name}?"
        no_q = f"Is the {a.name} {REL_PHRASE[OPPOSITE[rel]]} the {b.name}?"
        aux.extend(localisation_qas(rng, objects))
    elif subtask == "color":
        specs = distinct_specs(rng, rng.randint(1, 3))
        objects = make_objects(rng, specs)
        shape, color = rng.choice(specs)
        wrong = rng.choice([c for c in COLOR_NAMES if c != color])
        yes_q = f"Is the {shape} {color}?"
        no_q = f"Is the {shape} {wrong}?"
        aux.append((f"What color is the {shape}?", color))
    else:  # ocr
        pool = sign_numbers(ctx.pool)
        number = rng.choice(pool)
        close = [n for n in pool if n != number and (n[0] == number[0] or n[1] == number[1])]
        wrong = rng.choice(close or [n for n in pool if n != number])
        color = rng.choice(("white", "yellow", "orange", "green"))
        signs.append(Sign(rng.uniform(0.45, 0.55), rng.uniform(0.4, 0.6), rng.uniform(0.78, 0.9),
                          rng.uniform(0.46, 0.54), color, number,
                          pick_font(rng, ctx)))
        objects = []
        yes_q = f"Is the number on the sign {number}?"
        no_q = f"Is the number on the sign {wrong}?"
        aux.append(("What number is on the sign?", number))
    image = render(Scene(bg, objects, signs), ctx.assets, ctx.size, np_rng(rng))
    text = caption(objects) if objects else f"{signs[0].color} sign {signs[0].text}"
    return image, yes_q + YES_NO_SUFFIX, no_q + YES_NO_SUFFIX, aux, text


def train_example(rng: random.Random, ctx: Context) -> TrainExample:
    image, yes_q, no_q, aux, text = _image(rng, ctx, rng.choice(SUBTASKS))
    qas = [(yes_q, "yes"), (no_q, "no")] + aux
    rng.shuffle(qas)
    return TrainExample(image, qas[:4], maybe_caption(rng, text))


def eval_items(rng: random.Random, ctx: Context, n: int) -> list[EvalItem]:
    if n % 2:
        raise ValueError("mme items come in yes/no pairs: n must be even")
    items = []
    for i, sub in enumerate(balanced(rng, n // 2, len(SUBTASKS))):
        subtask = SUBTASKS[sub]
        image, yes_q, no_q, _, _ = _image(rng, ctx, subtask)
        image_id = f"{ctx.block_id}-{i}"
        for q, a in ((yes_q, "yes"), (no_q, "no")):
            items.append(EvalItem(image, q, a, meta={"subtask": subtask, "image_id": image_id},
                                  group=image_id))
    return items
