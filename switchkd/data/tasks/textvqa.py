"""textvqa-lite (TextVQA): read 2-character strings on coloured signs over photo backgrounds.

Scene text is held out at the string level: val/test strings never appear in train (a fixed
hash split of all strings, ``common.ocr_strings``), and half of the val/test signs use a
test-only font. At 32 px one or two signs carry 2 characters each.
"""

from __future__ import annotations

import os
import random

from switchkd.data.scenes import Scene, Sign, render
from switchkd.data.tasks.common import (SIGN_INK, Context, EvalItem, TrainExample,
                                        maybe_caption, np_rng, ocr_strings, pick_font,
                                        sample_background)

SIGN_COLORS = ("white", "yellow", "orange", "green", "red", "blue", "purple")


def _signs(rng: random.Random, ctx: Context) -> list[Sign]:
    pool = ocr_strings(ctx.pool)
    n = rng.randint(1, 2)
    texts = rng.sample(pool, n)
    colors = rng.sample(SIGN_COLORS, n)
    font = pick_font(rng, ctx)
    if n == 1:
        ys, h = [rng.uniform(0.35, 0.65)], rng.uniform(0.44, 0.54)
    else:
        ys, h = [rng.uniform(0.22, 0.27), rng.uniform(0.73, 0.78)], rng.uniform(0.38, 0.42)
    return [Sign(rng.uniform(0.42, 0.58), y, rng.uniform(0.74, 0.9), h, c, t, font, SIGN_INK[c])
            for y, c, t in zip(ys, colors, texts)]


def _render(rng: random.Random, ctx: Context, signs: list[Sign]):
    bg = sample_background(rng, ctx, kinds=("photo",))
    return render(Scene(bg, [], signs), ctx.assets, ctx.size, np_rng(rng))


def _read_question(signs: list[Sign], sign: Sign) -> str:
    if len(signs) == 1:
        return "What is written on the sign?"
    return f"What is written on the {sign.color} sign?"


def train_example(rng: random.Random, ctx: Context) -> TrainExample:
    signs = _signs(rng, ctx)
    image = _render(rng, ctx, signs)
    qas = [(_read_question(signs, s), s.text) for s in signs]
    qas.append(("How many signs are there?", str(len(signs))))
    s = rng.choice(signs)
    qas.append((f"What color is the sign that says {s.text}?", s.color))
    rng.shuffle(qas)
    text = " , ".join(f"{s.color} sign {s.text}" for s in signs)
    return TrainExample(image, qas[:rng.randint(1, 4)], maybe_caption(rng, text))


def eval_items(rng: random.Random, ctx: Context, n: int) -> list[EvalItem]:
    items = []
    for _ in range(n):
        signs = _signs(rng, ctx)
        image = _render(rng, ctx, signs)
        sign = rng.choice(signs)
        font = os.path.basename(sign.font) if sign.font else "pillow-default"
        items.append(EvalItem(image, _read_question(signs, sign), sign.text,
                              answers=[sign.text] * 10,
                              meta={"n_signs": len(signs), "font": font,
                                    "font_heldout": sign.font in ctx.assets.fonts["heldout"]
                                    and sign.font not in ctx.assets.fonts["train"]}))
    return items
