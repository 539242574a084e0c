"""vqa-lite (VQAv2): open-ended questions with balanced complementary pairs.

Every val/test question comes with a complementary scene: the same background and layout with
one minimal change (a colour, a shape, one object more or less) that flips the answer, as
VQAv2 balances its questions against language priors. ``meta["qtype"]`` is the VQA answer type
(yes/no, number, other); ``answers`` holds 10 pseudo-annotator answers for VQA accuracy.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

from switchkd.data.scenes import SHAPES, Scene, render
from switchkd.data.tasks.common import (COLOR_NAMES, PLURAL, Context, EvalItem, TrainExample,
                                        article, balanced, caption, distinct_specs, make_objects,
                                        maybe_caption, np_rng, pseudo_answers, sample_background)

FAMILIES = ("exist", "count", "color", "shape")
QTYPE = {"exist": "yes/no", "count": "number", "color": "other", "shape": "other"}


def _pair(rng: random.Random, ctx: Context, family: str):
    """(question, [(objects, answer), (objects, answer)]) for a complementary pair."""
    if family == "exist":
        specs = distinct_specs(rng, rng.randint(2, 4), unique_colors=False)
        objects = make_objects(rng, specs)
        i = rng.randrange(len(objects))
        target = objects[i]
        new_color = rng.choice([c for c in COLOR_NAMES
                                if c != target.color and (target.shape, c) not in specs])
        other = list(objects)
        other[i] = replace(target, color=new_color)
        question = f"Is there {article(target.color)} {target.color} {target.shape}?"
        return question, [(objects, "yes"), (other, "no")]
    if family == "count":
        shape = rng.choice(SHAPES)
        k = rng.randint(1, 4)
        specs = [(shape, rng.choice(COLOR_NAMES)) for _ in range(k + 1)]
        extra = [s for s in SHAPES if s != shape]
        specs += [(rng.choice(extra), rng.choice(COLOR_NAMES)) for _ in range(rng.randint(0, 1))]
        objects = make_objects(rng, specs)
        fewer = objects[1:]  # drop one of the k + 1 target-shape objects
        return f"How many {PLURAL[shape]} are there?", [(objects, str(k + 1)), (fewer, str(k))]
    if family == "color":
        objects = make_objects(rng, distinct_specs(rng, rng.randint(1, 3)))
        i = rng.randrange(len(objects))
        target = objects[i]
        other = list(objects)
        other[i] = replace(target, color=rng.choice([c for c in COLOR_NAMES if c != target.color]))
        return (f"What color is the {target.shape}?",
                [(objects, target.color), (other, other[i].color)])
    objects = make_objects(rng, distinct_specs(rng, rng.randint(1, 3)))
    i = rng.randrange(len(objects))
    target = objects[i]
    used = {o.shape for o in objects}
    other = list(objects)
    other[i] = replace(target, shape=rng.choice([s for s in SHAPES if s not in used]))
    return (f"What shape is the {target.color} object?",
            [(objects, target.shape), (other, other[i].shape)])


def _train_qas(rng: random.Random, objects) -> list[tuple[str, str]]:
    specs = {(o.shape, o.color) for o in objects}
    shapes = Counter(o.shape for o in objects)
    colors = Counter(o.color for o in objects)
    qas = []
    o = rng.choice(objects)
    if rng.random() < 0.5:
        qas.append((f"Is there {article(o.color)} {o.color} {o.shape}?", "yes"))
    else:
        near = [(s, c) for s in SHAPES for c in COLOR_NAMES
                if (s, c) not in specs and (s == o.shape or c == o.color)]
        s, c = rng.choice(near)
        qas.append((f"Is there {article(c)} {c} {s}?", "no"))
    shape = rng.choice(list(shapes)) if rng.random() < 0.85 else rng.choice(SHAPES)
    qas.append((f"How many {PLURAL[shape]} are there?", str(shapes[shape])))
    unique_shape = [o for o in objects if shapes[o.shape] == 1]
    if unique_shape:
        o = rng.choice(unique_shape)
        qas.append((f"What color is the {o.shape}?", o.color))
    unique_color = [o for o in objects if colors[o.color] == 1]
    if unique_color:
        o = rng.choice(unique_color)
        qas.append((f"What shape is the {o.color} object?", o.shape))
    rng.shuffle(qas)
    return qas[:rng.randint(1, 4)]


def train_example(rng: random.Random, ctx: Context) -> TrainExample:
    specs = distinct_specs(rng, rng.randint(1, 4), unique_shapes=False, unique_colors=False)
    objects = make_objects(rng, specs)
    image = render(Scene(sample_background(rng, ctx), objects), ctx.assets, ctx.size, np_rng(rng))
    return TrainExample(image, _train_qas(rng, objects), maybe_caption(rng, caption(objects)))


def eval_items(rng: random.Random, ctx: Context, n: int) -> list[EvalItem]:
    if n % 2:
        raise ValueError("vqa items come in complementary pairs: n must be even")
    items = []
    for i, fam in enumerate(balanced(rng, n // 2, len(FAMILIES))):
        family = FAMILIES[fam]
        question, members = _pair(rng, ctx, family)
        if rng.random() < 0.5:
            members.reverse()
        bg = sample_background(rng, ctx)
        pair_id = f"{ctx.block_id}-{i}"
        for objects, answer in members:
            image = render(Scene(bg, objects), ctx.assets, ctx.size, np_rng(rng))
            items.append(EvalItem(image, question, answer, answers=pseudo_answers(rng, answer),
                                  meta={"qtype": QTYPE[family], "family": family,
                                        "pair_id": pair_id},
                                  group=pair_id))
    return items
