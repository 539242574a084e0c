"""vizwiz-lite (VizWiz): one dominant object "photographed badly", 25% unanswerable.

Capture faults (``meta["faults"]``): blur, under- or over-exposure, rotation, off-centre
framing and a finger-like occluder. Unanswerable items (exactly a quarter of val/test) have the
object framed out of the picture or (shape and text questions) blurred beyond recognition.
Questions: "What color is this?", "What is this?" (a shape, or a Fashion-MNIST garment when
installed) and "What does the label say?" (a held-out 2-character string).
"""

from __future__ import annotations

import random

import numpy as np

from switchkd.data.assets import FASHION_CLASSES
from switchkd.data.scenes import (COLORS, SHAPES, Canvas, SceneObject, Sign, degrade,
                                  draw_objects)
from switchkd.data.tasks.common import (COLOR_NAMES, SIGN_INK, Context, EvalItem, TrainExample,
                                        balanced, maybe_caption, np_rng, ocr_strings, pick_font,
                                        pseudo_answers, sample_background)

QTYPES = ("color", "object", "text")
QUESTIONS = {"color": "What color is this?", "object": "What is this?",
             "text": "What does the label say?"}
SKIN = (224, 172, 140)


def _make(rng: random.Random, ctx: Context, qtype: str, answerable: bool):
    """(image, facts {question type: answer}, faults, caption); facts are empty if unanswerable."""
    canvas = Canvas(ctx.size, sample_background(rng, ctx), ctx.assets)
    faults: list[str] = []
    # Framing: centred-ish, off-centre, or (unanswerable) almost entirely out of the frame.
    # A heavy blur still shows a colour, so colour questions become unanswerable by framing only.
    modes = ("framed_out",) if qtype == "color" else ("framed_out", "heavy_blur")
    unanswerable_mode = None if answerable else rng.choice(modes)
    if unanswerable_mode == "framed_out":
        edge = rng.choice(("left", "right", "top", "bottom"))
        out = rng.uniform(0.62, 0.75)  # centre this far outside the middle: ~nothing visible
        x, y = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)
        if edge in ("left", "right"):
            x = -out if edge == "left" else 1 + out
        else:
            y = -out if edge == "top" else 1 + out
        faults.append("framed_out")
    elif rng.random() < 0.3:
        x, y = rng.uniform(0.32, 0.68), rng.uniform(0.32, 0.68)
        faults.append("off_centre")
    else:
        x, y = rng.uniform(0.45, 0.55), rng.uniform(0.45, 0.55)
    r = rng.uniform(0.22, 0.3)
    color = rng.choice(COLOR_NAMES)
    if qtype == "text":
        text = rng.choice(ocr_strings(ctx.pool))
        label_color = rng.choice(("white", "yellow", "orange"))
        canvas.sign(Sign(x, y, 2.6 * r, 1.6 * r, label_color, text, pick_font(rng, ctx),
                         SIGN_INK[label_color]))
        facts, name = {"text": text}, f"label {text}"
    elif qtype == "object" and ctx.assets.fashion is not None and rng.random() < 0.5:
        images, labels = ctx.assets.fashion[ctx.pool]
        i = rng.randrange(len(labels))
        side = 2.4 * r
        canvas.gray_image(images[i].astype(np.float32) / 255.0,
                          (x - side / 2, y - side / 2, x + side / 2, y + side / 2),
                          COLORS[color], None)
        name = FASHION_CLASSES[int(labels[i])]
        facts = {"object": name, "color": color}
    else:
        shape = rng.choice(SHAPES)
        draw_objects(canvas, [SceneObject(shape, color, x, y, r)])
        facts, name = {"color": color, "object": shape}, f"{color} {shape}"
    if rng.random() < 0.25:  # a finger over one edge of the picture
        ex, ey = rng.choice(((0.0, rng.uniform(0.2, 0.8)), (1.0, rng.uniform(0.2, 0.8)),
                             (rng.uniform(0.2, 0.8), 1.0)))
        canvas.ellipse(ex, ey, rng.uniform(0.14, 0.2), rng.uniform(0.22, 0.3), SKIN)
        faults.append("occluder")
    image = canvas.to_array(np_rng(rng), 4.0)
    blur, gain, gamma, rotate = 0.0, 1.0, 1.0, 0
    if unanswerable_mode == "heavy_blur":
        blur = rng.uniform(5.0, 7.0)
        faults.append("heavy_blur")
    elif rng.random() < 0.4:
        blur = rng.uniform(0.5, 1.2)
        faults.append("blur")
    exposure = rng.random()
    if exposure < 0.2:
        gain = rng.uniform(0.35, 0.55)
        faults.append("dark")
    elif exposure < 0.35:
        gamma = rng.uniform(0.4, 0.6)
        faults.append("bright")
    if qtype != "text" and rng.random() < 0.3:
        rotate = rng.choice((90, 180, 270))
        faults.append("rotated")
    image = degrade(image, blur=blur, gain=gain, gamma=gamma, rotate=rotate)
    if not answerable:
        return image, {}, faults, "unclear photo"
    return image, facts, faults, name


def train_example(rng: random.Random, ctx: Context) -> TrainExample:
    qtype = rng.choice(QTYPES)
    answerable = rng.random() >= 0.25
    image, facts, _, text = _make(rng, ctx, qtype, answerable)
    asked = [qtype] + [t for t in facts if t != qtype]
    qas = [(QUESTIONS[t], facts.get(t, "unanswerable")) for t in asked]
    qas.append(("Is the picture clear enough to answer?", "yes" if answerable else "no"))
    rng.shuffle(qas)
    return TrainExample(image, qas[:rng.randint(1, 3)], maybe_caption(rng, text))


def eval_items(rng: random.Random, ctx: Context, n: int) -> list[EvalItem]:
    items = []
    for q, a in zip(balanced(rng, n, len(QTYPES)), balanced(rng, n, 4)):
        qtype, answerable = QTYPES[q], a != 0
        image, facts, faults, _ = _make(rng, ctx, qtype, answerable)
        answer = facts[qtype] if answerable else "unanswerable"
        items.append(EvalItem(image, QUESTIONS[qtype], answer,
                              answers=pseudo_answers(rng, answer),
                              meta={"qtype": qtype, "answerable": answerable, "faults": faults}))
    return items
