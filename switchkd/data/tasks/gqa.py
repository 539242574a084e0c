"""gqa-lite (GQA): compositional questions over the scene graph.

Structural types (``meta["type"]``), as in GQA: verify ("Is the square to the left of the
cross?"), query ("What color is the shape to the left of the blue star?"), compare ("Are the
circle and the square the same color?"), choose ("Is the star above or below the triangle?"),
logical ("Is there a red circle or a blue square?"). Spatial relations hold with a margin of at
least 0.12 S, else the scene is resampled. Train images also get the easier localisation
sub-skills ("Is the red circle on the left or the right?").
"""

from __future__ import annotations

import random
from dataclasses import replace

from switchkd.data.scenes import SHAPES, Scene, render
from switchkd.data.tasks.common import (COLOR_NAMES, Context, EvalItem, TrainExample, article,
                                        balanced, caption, distinct_specs, localisation_qas,
                                        make_objects, maybe_caption, np_rng, relation,
                                        sample_background)

TYPES = ("verify", "query", "compare", "choose", "logical")
YES_NO_TYPES = ("verify", "compare", "logical")
MARGIN = 0.12
PHRASE = {"left": "to the left of", "right": "to the right of", "above": "above",
          "below": "below"}
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}


def _scene(rng: random.Random, *, unique_colors: bool = False):
    specs = distinct_specs(rng, 3, unique_colors=unique_colors)
    return make_objects(rng, specs)


def _question(rng: random.Random, qtype: str, yes: bool):
    """(objects, question, answer) satisfying the type's constraints (resampled until they do)."""
    for _ in range(200):
        if qtype == "verify":
            objects = _scene(rng)
            a, b = rng.sample(objects, 2)
            rels = relation(a, b, MARGIN)
            if not rels:
                continue
            rel = rng.choice(rels)
            asked = rel if yes else OPPOSITE[rel]
            q = f"Is the {a.shape} {PHRASE[asked]} the {b.shape}?"
            return objects, q, "yes" if yes else "no"
        if qtype == "query":
            objects = _scene(rng, unique_colors=True)
            b = rng.choice(objects)
            rel = rng.choice(("left", "right", "above", "below"))
            hits = [o for o in objects if o is not b and rel in relation(o, b, MARGIN)]
            clear = all(OPPOSITE[rel] in relation(o, b, MARGIN)
                        for o in objects if o is not b and o not in hits)
            if len(hits) != 1 or not clear:
                continue
            if rng.random() < 0.5:
                return (objects, f"What color is the shape {PHRASE[rel]} the {b.name}?",
                        hits[0].color)
            return (objects, f"What shape is the object {PHRASE[rel]} the {b.name}?",
                    hits[0].shape)
        if qtype == "compare":
            objects = _scene(rng)
            a, b = rng.sample(objects, 2)
            if (a.color == b.color) != yes:
                if yes:
                    objects = [replace(o, color=a.color) if o is b else o for o in objects]
                else:
                    continue
            return (objects, f"Are the {a.shape} and the {b.shape} the same color?",
                    "yes" if yes else "no")
        if qtype == "choose":
            objects = _scene(rng)
            a, b = rng.sample(objects, 2)
            rels = relation(a, b, MARGIN)
            if not rels:
                continue
            rel = rng.choice(rels)
            pair = ("left", "right") if rel in ("left", "right") else ("above", "below")
            first, second = pair if rng.random() < 0.5 else pair[::-1]
            if rel in ("left", "right"):
                q = f"Is the {a.shape} to the {first} or to the {second} of the {b.shape}?"
            else:
                q = f"Is the {a.shape} {first} or {second} the {b.shape}?"
            return objects, q, rel
        # logical
        objects = _scene(rng)
        present = [(o.color, o.shape) for o in objects]
        absent = [(c, s) for s in SHAPES for c in COLOR_NAMES if (c, s) not in present]
        if rng.random() < 0.5:  # "or": yes iff at least one is present
            x = rng.choice(present) if yes else rng.choice(absent)
            y = rng.choice([p for p in absent if p != x])
            pair = [x, y]
            rng.shuffle(pair)
            (c1, s1), (c2, s2) = pair
            q = f"Is there {article(c1)} {c1} {s1} or {article(c2)} {c2} {s2}?"
            return objects, q, "yes" if yes else "no"
        x = rng.choice(present)  # "and": yes iff both are present
        y = rng.choice([p for p in present if p != x]) if yes else rng.choice(absent)
        pair = [x, y]
        rng.shuffle(pair)
        (c1, s1), (c2, s2) = pair
        q = f"Is there both {article(c1)} {c1} {s1} and {article(c2)} {c2} {s2}?"
        return objects, q, "yes" if yes else "no"
    raise RuntimeError(f"could not sample a gqa {qtype} question")


def train_example(rng: random.Random, ctx: Context) -> TrainExample:
    qtype = rng.choice(TYPES)
    objects, q, a = _question(rng, qtype, rng.random() < 0.5)
    qas = [(q, a)]
    # More questions over the same scene graph (any that hold), then localisation sub-skills.
    b = rng.choice(objects)
    a_obj = rng.choice([o for o in objects if o is not b])
    rels = relation(a_obj, b, MARGIN)
    if rels:
        rel = rng.choice(rels)
        qas.append((f"Is the {a_obj.shape} {PHRASE[rel]} the {b.shape}?", "yes"))
        qas.append((f"Is the {a_obj.shape} {PHRASE[OPPOSITE[rel]]} the {b.shape}?", "no"))
        qas = [qas[0], rng.choice(qas[1:])]
    qas += localisation_qas(rng, objects)
    image = render(Scene(sample_background(rng, ctx), objects), ctx.assets, ctx.size, np_rng(rng))
    return TrainExample(image, qas[:4], maybe_caption(rng, caption(objects)))


def eval_items(rng: random.Random, ctx: Context, n: int) -> list[EvalItem]:
    types = [TYPES[t] for t in balanced(rng, n, len(TYPES))]
    yes_flags = iter(balanced(rng, sum(t in YES_NO_TYPES for t in types), 2))
    items = []
    for qtype in types:
        yes = bool(next(yes_flags)) if qtype in YES_NO_TYPES else False
        objects, q, a = _question(rng, qtype, yes)
        image = render(Scene(sample_background(rng, ctx), objects), ctx.assets, ctx.size,
                       np_rng(rng))
        items.append(EvalItem(image, q, a, meta={"type": qtype}))
    return items
