"""mmb-lite (MMBench) and mmbcn-lite (MMBench-CN): 4-option multiple choice over ability tags.

Abilities (``meta["ability"]``): attribute_color, attribute_shape, attribute_size, localization,
spatial_relation, counting, ocr, scene. An item is generated once with English and Chinese text;
``mmbcn`` val/test reuse ``mmb``'s rng stream, so they hold the very same images, options and
answer letters with Chinese question and option text. Train images get one MC turn (Chinese for
``mmbcn``) plus English open-ended versions of the same skill.
"""

from __future__ import annotations

import random

from switchkd.data.scenes import SHAPES, Scene, SceneObject, Sign, render
from switchkd.data.tasks.common import (COLOR_CN, COLOR_NAMES, PLURAL, QUADRANT_CN, QUADRANTS,
                                        RELATION_CN, RELATIONS, SHAPE_CN, Context, EvalItem,
                                        TrainExample, balanced, caption, distinct_specs,
                                        localisation_qas, make_objects, maybe_caption, mc_options,
                                        mc_turn, np_rng, ocr_strings, pick_font, radius,
                                        sample_background, side_of)

ABILITIES = ("attribute_color", "attribute_shape", "attribute_size", "localization",
             "spatial_relation", "counting", "ocr", "scene")
BACKGROUNDS = ("plain color", "photo", "stripes", "checkerboard")
BACKGROUND_KIND = {"plain color": "plain", "photo": "photo", "stripes": "stripes",
                   "checkerboard": "checker"}
OPTION_CN = {**COLOR_CN, **SHAPE_CN, **QUADRANT_CN, **RELATION_CN,
             "plain color": "纯色", "photo": "照片", "stripes": "条纹", "checkerboard": "棋盘格"}


def _cn_name(obj: SceneObject) -> str:
    return f"{COLOR_CN[obj.color]}{SHAPE_CN[obj.shape]}"


def _question(rng: random.Random, ctx: Context, ability: str):
    """(image, question_en, question_cn, correct, distractors(3), open-ended train QAs, caption)."""
    bg = sample_background(rng, ctx)
    signs: list[Sign] = []
    aux: list[tuple[str, str]] = []
    if ability == "attribute_color":
        objects = make_objects(rng, distinct_specs(rng, rng.randint(1, 3)))
        obj = rng.choice(objects)
        q_en = f"What color is the {obj.shape}?"
        q_cn = f"图中{SHAPE_CN[obj.shape]}是什么颜色？"
        correct = obj.color
        distractors = rng.sample([c for c in COLOR_NAMES if c != obj.color], 3)
        aux.append((q_en, obj.color))
    elif ability == "attribute_shape":
        objects = make_objects(rng, distinct_specs(rng, rng.randint(1, 3)))
        obj = rng.choice(objects)
        q_en = f"What shape is the {obj.color} object?"
        q_cn = f"{COLOR_CN[obj.color]}的物体是什么形状？"
        correct = obj.shape
        distractors = rng.sample([s for s in SHAPES if s != obj.shape], 3)
        aux.append((q_en, obj.shape))
    elif ability == "attribute_size":
        specs = distinct_specs(rng, 3)
        radii = [radius(rng, "large")] + [radius(rng, "small") for _ in specs[1:]]
        objects = make_objects(rng, specs, radii=radii)
        correct = objects[0].shape
        present = [o.shape for o in objects[1:]]
        absent = [s for s in SHAPES if s not in present and s != correct]
        distractors = present + [rng.choice(absent)]
        q_en = "Which shape is the largest?"
        q_cn = "哪个形状最大？"
        aux.append((q_en, correct))
    elif ability == "localization":
        while True:
            objects = make_objects(rng, distinct_specs(rng, rng.randint(1, 2)))
            h, v = side_of(objects[0], margin=0.14)
            if h and v:
                break
        obj = objects[0]
        correct = f"{v} {h}"
        distractors = [q for q in QUADRANTS if q != correct]
        q_en = f"Where is the {obj.name}?"
        q_cn = f"{_cn_name(obj)}在图中的什么位置？"
        aux.append((q_en, correct))
    elif ability == "spatial_relation":
        correct = rng.choice(RELATIONS)
        specs = distinct_specs(rng, 2)
        near, far = rng.uniform(0.16, 0.34), rng.uniform(0.66, 0.84)
        mid = rng.uniform(0.3, 0.7)
        jitter = [mid + rng.uniform(-0.05, 0.05) for _ in range(2)]
        first, second = {"left": (near, far), "right": (far, near),
                         "above": (near, far), "below": (far, near)}[correct]
        rs = [radius(rng) for _ in range(2)]
        if correct in ("left", "right"):
            centres = [(first, jitter[0]), (second, jitter[1])]
        else:
            centres = [(jitter[0], first), (jitter[1], second)]
        objects = [SceneObject(s, c, x, y, r) for (s, c), (x, y), r in zip(specs, centres, rs)]
        a, b = objects
        distractors = [r for r in RELATIONS if r != correct]
        q_en = f"Where is the {a.name} relative to the {b.name}?"
        q_cn = f"{_cn_name(a)}在{_cn_name(b)}的什么方位？"
        aux.extend(localisation_qas(rng, objects))
    elif ability == "counting":
        shape = rng.choice(SHAPES)
        k = rng.randint(1, 5)  # answers and distractors both span 1..5: no option is never right
        specs = [(shape, rng.choice(COLOR_NAMES)) for _ in range(k)]
        others = [s for s in SHAPES if s != shape]
        specs += [(rng.choice(others), rng.choice(COLOR_NAMES)) for _ in range(rng.randint(0, 1))]
        objects = make_objects(rng, specs)
        correct = str(k)
        distractors = rng.sample([str(v) for v in range(1, 6) if v != k], 3)
        q_en = f"How many {PLURAL[shape]} are there?"
        q_cn = f"图中有几个{SHAPE_CN[shape]}？"
        aux.append((q_en, correct))
    elif ability == "ocr":
        pool = ocr_strings(ctx.pool)
        correct = rng.choice(pool)
        # Distractors share the first character with the answer (when the pool allows), so all
        # four options look alike and none stands out by overlapping the others most.
        similar = [s for s in pool if s != correct and s[0] == correct[0]]
        distractors = rng.sample(similar if len(similar) >= 3 else
                                 [s for s in pool if s != correct], 3)
        signs.append(Sign(rng.uniform(0.45, 0.55), rng.uniform(0.4, 0.6), rng.uniform(0.78, 0.9),
                          rng.uniform(0.46, 0.54), rng.choice(("white", "yellow", "orange")),
                          correct, pick_font(rng, ctx)))
        objects = []
        q_en = "What is written on the sign?"
        q_cn = "牌子上写的是什么？"
        aux.append((q_en, correct))
    else:  # scene
        correct = rng.choice([b for b in BACKGROUNDS
                              if b != "photo" or ctx.assets.photos[ctx.pool]])
        bg = sample_background(rng, ctx, kinds=(BACKGROUND_KIND[correct],))
        objects = make_objects(rng, distinct_specs(rng, rng.randint(1, 2)))
        distractors = [b for b in BACKGROUNDS if b != correct]
        q_en = "What kind of background does the image have?"
        q_cn = "图片的背景是什么类型？"
        aux.append((q_en, correct))
    image = render(Scene(bg, objects, signs), ctx.assets, ctx.size, np_rng(rng))
    text = caption(objects) if objects else f"{signs[0].color} sign {signs[0].text}"
    return image, q_en, q_cn, correct, distractors, aux, text


def _translate(options: list[str]) -> list[str]:
    return [OPTION_CN.get(o, o) for o in options]


def train_example(rng: random.Random, ctx: Context, *, chinese: bool = False) -> TrainExample:
    ability = rng.choice(ABILITIES)
    image, q_en, q_cn, correct, distractors, aux, text = _question(rng, ctx, ability)
    options, letter = mc_options(rng, correct, distractors, rng.randrange(4))
    if chinese:
        turn = mc_turn(q_cn, _translate(options), letter, chinese=True)
    else:
        turn = mc_turn(q_en, options, letter)
    rng.shuffle(aux)
    return TrainExample(image, [turn] + aux[:2], maybe_caption(rng, text))


def eval_items(rng: random.Random, ctx: Context, n: int, *, chinese: bool = False
               ) -> list[EvalItem]:
    items = []
    for i, (ab, target) in enumerate(zip(balanced(rng, n, len(ABILITIES)), balanced(rng, n, 4))):
        image, q_en, q_cn, correct, distractors, _, _ = _question(rng, ctx, ABILITIES[ab])
        options, letter = mc_options(rng, correct, distractors, target)
        meta = {"ability": ABILITIES[ab], "index": f"{ctx.block_id}-{i}"}
        if chinese:
            items.append(EvalItem(image, q_cn, letter, options=_translate(options), meta=meta))
        else:
            items.append(EvalItem(image, q_en, letter, options=options, meta=meta))
    return items
