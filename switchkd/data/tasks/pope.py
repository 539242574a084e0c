"""pope-lite (POPE): object-hallucination probing with yes/no existence questions, 50% yes.

Scenes are sampled from themes, which create co-occurrence priors. Negatives come three ways
(``meta["setting"]``): random (any absent category), popular (the most frequent categories in
train scenes) and adversarial (absent categories that co-occur most with the present ones);
positives are chosen by the same rule, so a question-only (blind) model stays near 50%. With
an emoji font the categories are real objects; without one they fall back to the 48 shape x
colour categories, with themes as preferred colour/shape combinations.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from switchkd.data.scenes import SHAPES, Scene, SceneObject, render
from switchkd.data.tasks.common import (COLOR_NAMES, Context, EvalItem, TrainExample, article,
                                        balanced, caption, make_objects, maybe_caption, np_rng,
                                        place, sample_background)

SETTINGS = ("random", "popular", "adversarial")
SHAPE_THEMES = (
    (("red", "orange"), ("circle", "triangle", "star")),
    (("blue", "green"), ("square", "diamond", "cross")),
    (("yellow", "purple"), ("circle", "square", "cross")),
    (("white", "gray"), ("triangle", "diamond", "star")),
    (("red", "blue"), ("diamond", "cross", "circle")),
    (("green", "orange"), ("star", "square", "triangle")),
)
STATS_SCENES = 5000
TOP_K = 3  # adversarial negatives: drawn among this many most co-occurring absent categories
POPULAR = 6  # popular probes (yes and no): the most frequent train categories


@dataclass
class Bank:
    """Categories, their themes and train-scene statistics (frequency, co-occurrence)."""

    categories: tuple[str, ...]
    themes: tuple[tuple[str, ...], ...]
    icons: bool
    frequency: Counter
    cooccurrence: dict[str, Counter]


def _categories(ctx: Context) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...], bool]:
    if ctx.assets.icons is not None:
        return tuple(ctx.assets.icons.images), ctx.assets.icons.themes, True
    cats = tuple(f"{c} {s}" for s in SHAPES for c in COLOR_NAMES)
    themes = tuple(tuple(f"{c} {s}" for c in colors for s in shapes)
                   for colors, shapes in SHAPE_THEMES)
    return cats, themes, False


def _sample(rng: random.Random, categories, themes) -> list[str]:
    theme = rng.choice(themes)
    chosen: list[str] = []
    for _ in range(rng.randint(2, 4)):
        source = theme if rng.random() < 0.8 else categories
        options = [c for c in source if c not in chosen] or [c for c in categories
                                                             if c not in chosen]
        chosen.append(rng.choice(options))
    return chosen


def bank(ctx: Context) -> Bank:
    """The category bank with statistics from ``STATS_SCENES`` draws of the train scene sampler
    (its own seed stream), cached per process."""
    key = ("pope", ctx.seed)
    if key not in ctx.cache:
        categories, themes, icons = _categories(ctx)
        rng = random.Random(f"pope-stats-train-{ctx.seed}")
        frequency: Counter = Counter()
        cooc: dict[str, Counter] = {c: Counter() for c in categories}
        for _ in range(STATS_SCENES):
            scene = _sample(rng, categories, themes)
            frequency.update(scene)
            for a in scene:
                cooc[a].update(b for b in scene if b != a)
        ctx.cache[key] = Bank(categories, themes, icons, frequency, cooc)
    return ctx.cache[key]


def probe(rng: random.Random, b: Bank, present: list[str], setting: str,
          yes: bool) -> str | None:
    """The category asked about, present (``yes``) or absent; ``None`` if the scene has none.

    Negatives follow POPE: random (absent categories, weighted by train frequency), popular
    (the ``POPULAR`` most frequent train categories) and adversarial (among the ``TOP_K`` absent
    ones co-occurring most with the present ones). Positives are picked by the same rule (a
    present popular category; the present object co-occurring most with the others), so the
    category name alone says little about the answer: a blind model stays near 50%.
    """
    pool = list(present) if yes else [c for c in b.categories if c not in present]
    if setting == "random":
        if yes:
            return rng.choice(pool)
        return rng.choices(pool, weights=[b.frequency[c] + 1 for c in pool])[0]
    if setting == "popular":
        popular = [c for c, _ in sorted(b.frequency.items(), key=lambda kv: (-kv[1], kv[0]))]
        pool = [c for c in pool if c in popular[:POPULAR]]
        return rng.choice(pool) if pool else None
    ranked = sorted(pool, key=lambda c: (-sum(b.cooccurrence[p][c] for p in present if p != c),
                                         c))
    return rng.choice(ranked[:1 if yes else TOP_K])


def _objects(rng: random.Random, b: Bank, names: list[str]) -> list[SceneObject]:
    if not b.icons:
        return make_objects(rng, [tuple(reversed(n.split(" "))) for n in names])
    radii = [rng.uniform(0.14, 0.17) for _ in names]
    centres = None
    while centres is None:
        centres = place(rng, radii, gap=0.02)
    return [SceneObject("icon", "none", x, y, r, icon=n)
            for n, (x, y), r in zip(names, centres, radii)]


def _question(name: str) -> str:
    return f"Is there {article(name)} {name} in the image?"


def _draw(rng: random.Random, ctx: Context, b: Bank, names: list[str]):
    objects = _objects(rng, b, names)
    image = render(Scene(sample_background(rng, ctx), objects), ctx.assets, ctx.size, np_rng(rng))
    return objects, image


def train_example(rng: random.Random, ctx: Context) -> TrainExample:
    b = bank(ctx)
    names = _sample(rng, b.categories, b.themes)
    objects, image = _draw(rng, ctx, b, names)
    qas = []
    for yes in balanced(rng, rng.choice((2, 4)), 2):
        name = probe(rng, b, names, rng.choice(SETTINGS), bool(yes))
        if name is None:
            name = probe(rng, b, names, "random", bool(yes))
        qas.append((_question(name), "yes" if yes else "no"))
    if rng.random() < 0.3:
        qas.append(("How many objects are there?", str(len(names))))
    rng.shuffle(qas)
    return TrainExample(image, qas[:4], maybe_caption(rng, caption(objects)))


def eval_items(rng: random.Random, ctx: Context, n: int) -> list[EvalItem]:
    b = bank(ctx)
    # Balanced yes/no overall, and settings balanced within the yes and within the no items,
    # so every setting is close to 50% yes as POPE's yes-ratio metric expects.
    yes_flags = balanced(rng, n, 2)
    per_answer = {y: iter(balanced(rng, yes_flags.count(y), len(SETTINGS))) for y in (0, 1)}
    items = []
    for yes in yes_flags:
        s = next(per_answer[yes])
        setting = SETTINGS[s]
        name = None
        while name is None:  # popular positives need a popular object in the scene
            names = _sample(rng, b.categories, b.themes)
            name = probe(rng, b, names, setting, bool(yes))
        _, image = _draw(rng, ctx, b, names)
        items.append(EvalItem(image, _question(name), "yes" if yes else "no",
                              meta={"setting": setting, "object": name}))
    return items
