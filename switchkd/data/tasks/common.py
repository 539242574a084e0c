"""Shared vocabulary, item types and helpers of the MiniVL-10 task generators.

Conventions every task follows:

* ``train_example(rng, ctx) -> TrainExample``: one image with 1-4 question/answer pairs (plus an
  optional caption); ``pack`` turns it into a LLaVA conversation.
* ``eval_items(rng, ctx, n) -> list[EvalItem]``: ``n`` single-turn items. Balanced answers
  (yes/no, MC letters, pair members) are assigned from a shuffled schedule (``balanced``), so
  balance holds by construction and ``check_balance`` only guards it.
* Randomness comes only from the ``random.Random`` passed in (string-seeded by the caller) and
  numpy generators seeded from it (``np_rng``).
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from switchkd.data.assets import Assets
from switchkd.data.format import IMAGE_TOKEN, OPTION_LETTERS, format_mc_question
from switchkd.data.scenes import COLORS, SHAPES, Background, SceneObject

COLOR_NAMES = tuple(COLORS)
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles",
          "diamond": "diamonds", "cross": "crosses", "star": "stars", "pentagon": "pentagons",
          "hexagon": "hexagons"}
COLOR_CN = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色",
            "orange": "橙色", "white": "白色", "gray": "灰色"}
SHAPE_CN = {"circle": "圆形", "square": "正方形", "triangle": "三角形", "diamond": "菱形",
            "cross": "十字形", "star": "星形", "pentagon": "五边形", "hexagon": "六边形"}
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
QUADRANT_CN = {"top left": "左上", "top right": "右上", "bottom left": "左下",
               "bottom right": "右下"}
RELATIONS = ("left", "right", "above", "below")
RELATION_CN = {"left": "左边", "right": "右边", "above": "上方", "below": "下方"}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten")
SYNONYMS = {"gray": "grey", "purple": "violet", "unanswerable": "unsuitable"}

# 2-character scene-text strings: no O/I/Q, which are indistinguishable from 0/1 at 32 px.
OCR_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
CAPTION_QUESTION = "Describe the image."
YES_NO_SUFFIX = " Please answer yes or no."

# The fixed answer vocabulary added to the tokenizer's training text (design section 4).
ANSWER_VOCAB = (
    ("yes", "no", "unanswerable", "left", "right", "top", "bottom", "above", "below",
     "attract", "repel", "increasing", "decreasing")
    + COLOR_NAMES + tuple(SHAPES) + ("pentagon", "hexagon") + QUADRANTS
    + tuple(str(i) for i in range(21)) + OPTION_LETTERS[:4]
    + tuple(COLOR_CN.values()) + tuple(SHAPE_CN.values()) + tuple(QUADRANT_CN.values())
    + tuple(RELATION_CN.values())
)


@dataclass
class Context:
    """What a generator needs besides its rng: assets, image size and the split's pools."""

    assets: Assets
    size: int
    split: str
    seed: int
    block_id: str = ""  # "{task}-{split}-{seed}-{block}": prefix for item and group ids
    cache: dict = field(default_factory=dict)  # per-process derived tables (POPE statistics)

    @property
    def pool(self) -> str:
        """``train`` for the train split; val and test draw from the held-out pools."""
        return "train" if self.split == "train" else "heldout"


@dataclass
class TrainExample:
    image: np.ndarray  # (S, S, 3) uint8
    qas: list[tuple[str, str]]
    caption: str | None = None


@dataclass
class EvalItem:
    image: np.ndarray  # (S, S, 3) uint8
    question: str
    answer: str
    answers: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    group: str = ""  # items sharing a group (pairs) are kept or dropped together by dedupe


# --- randomness and balance -------------------------------------------------------------------


def np_rng(rng: random.Random) -> np.random.Generator:
    return np.random.default_rng(rng.getrandbits(64))


def balanced(rng: random.Random, n: int, k: int) -> list[int]:
    """``n`` values in ``range(k)``, each used ``n // k`` or ``n // k + 1`` times, shuffled."""
    values = [i % k for i in range(n)]
    rng.shuffle(values)
    return values


def mc_options(rng: random.Random, correct: str, distractors: list[str],
               target: int) -> tuple[list[str], str]:
    """Options with ``correct`` at index ``target`` and the distractors shuffled around it."""
    others = list(distractors)
    rng.shuffle(others)
    options = others[:target] + [correct] + others[target:]
    if len(set(options)) != len(options):
        raise ValueError(f"duplicate MC options {options}")
    return options, OPTION_LETTERS[target]


def numeric_distractors(rng: random.Random, correct: int, lo: int) -> list[str]:
    """Three numbers that, with ``correct``, form 4 consecutive values >= ``lo``; the answer's
    rank among them is uniform (away from ``lo``), so "pick the middle option" gains nothing."""
    start = max(lo, correct - rng.randrange(4))
    return [str(v) for v in range(start, start + 4) if v != correct]


def mc_turn(question: str, options: list[str], letter: str, *,
            chinese: bool = False) -> tuple[str, str]:
    """A train turn for an MC item: the rendered question and the letter."""
    return format_mc_question(question, options, chinese=chinese), letter


def check_balance(task: str, split: str, rows: list[dict]) -> None:
    """Assert balanced yes/no answers and MC letters in val/test rows (design section 5.3.5).

    Yes/no: |#yes - #no| <= max(2, 4% of the yes/no rows). MC: per option count k, every letter
    within max(2, 25% of the expected count) of ``n_k / k``.
    """
    yes_no = Counter(r["answer"] for r in rows
                     if not r["options"] and r["answer"] in ("yes", "no"))
    total = sum(yes_no.values())
    if total:
        assert abs(yes_no["yes"] - yes_no["no"]) <= max(2, 0.04 * total), (task, split, yes_no)
    by_k: dict[int, Counter] = {}
    for r in rows:
        if r["options"]:
            assert r["answer"] in OPTION_LETTERS[:len(r["options"])], (task, r["answer"])
            by_k.setdefault(len(r["options"]), Counter())[r["answer"]] += 1
    for k, letters in by_k.items():
        expected = sum(letters.values()) / k
        for letter in OPTION_LETTERS[:k]:
            assert abs(letters[letter] - expected) <= max(2, 0.25 * expected), (task, split,
                                                                                letters)


# --- OCR strings with a string-level hold-out ---------------------------------------------------


def is_heldout_string(text: str) -> bool:
    """A fixed 1-in-5 hash split of scene-text strings: held-out strings never appear in train."""
    return hashlib.sha256(text.encode()).digest()[0] % 5 == 0


def ocr_strings(pool: str) -> list[str]:
    every = ["".join(p) for p in itertools.product(OCR_CHARS, repeat=2)]
    # Keep letter pairs that could be word pieces of the prompt text ("US" in "USER") out of
    # the pools entirely, so a held-out string can never be a learned token by accident.
    every = [s for s in every if s not in ("US", "SE", "ER", "AS", "SS", "SI", "IS", "ST", "TA",
                                           "AN", "NT", "CN")]
    return [s for s in every if is_heldout_string(s) == (pool == "heldout")]


def sign_numbers(pool: str) -> list[str]:
    return [str(i) for i in range(10, 100) if is_heldout_string(str(i)) == (pool == "heldout")]


def pseudo_answers(rng: random.Random, answer: str) -> list[str]:
    """Ten pseudo-annotator answers (VQA accuracy): mostly ``answer``, some synonym/number-word
    variants (7 x "gray" + 3 x "grey")."""
    variant = SYNONYMS.get(answer)
    if answer.isdigit() and int(answer) < len(NUMBER_WORDS):
        variant = NUMBER_WORDS[int(answer)]
    n_main = 10 if variant is None else rng.randint(6, 10)
    return [answer] * n_main + [variant] * (10 - n_main)


# --- scene sampling -----------------------------------------------------------------------------


def sample_background(rng: random.Random, ctx: Context,
                      kinds: tuple[str, ...] = ("plain", "photo")) -> Background:
    """Flat colour or a darkened photo crop (50/50 if photos exist); stripes/checker on request."""
    if "photo" in kinds and not ctx.assets.photos[ctx.pool]:
        kinds = tuple(k for k in kinds if k != "photo") or ("plain",)
    kind = rng.choice(kinds)
    base = rng.randint(35, 95)
    color = tuple(min(255, max(0, base + rng.randint(-20, 20))) for _ in range(3))
    if kind == "photo":
        photos = ctx.assets.photos[ctx.pool]
        idx = rng.randrange(len(photos))
        w, h = photos[idx].size
        side = rng.uniform(0.45, 0.9) * min(w, h)
        x0, y0 = rng.uniform(0, w - side), rng.uniform(0, h - side)
        return Background("photo", photo=idx, pool=ctx.pool,
                          box=(x0 / w, y0 / h, (x0 + side) / w, (y0 + side) / h),
                          gain=rng.uniform(0.45, 0.7))
    if kind in ("stripes", "checker"):
        color2 = tuple(min(255, c + rng.randint(45, 80)) for c in color)
        return Background(kind, color=color, color2=color2, period=rng.choice((0.125, 0.25)))
    return Background("plain", color=color)


def place(rng: random.Random, radii: list[float], *, gap: float = 0.04, border: float = 0.02,
          tries: int = 300) -> list[tuple[float, float]] | None:
    """Non-overlapping centres for objects of the given radii, or ``None`` if none found."""
    centres: list[tuple[float, float]] = []
    for r in radii:
        for _ in range(tries):
            x = rng.uniform(r + border, 1 - r - border)
            y = rng.uniform(r + border, 1 - r - border)
            if all(distance(x, y, cx, cy) >= r + cr + gap
                   for (cx, cy), cr in zip(centres, radii)):
                centres.append((x, y))
                break
        else:
            return None
    return centres


def distance(x0: float, y0: float, x1: float, y1: float) -> float:
    return ((x0 - x1) ** 2 + (y0 - y1) ** 2) ** 0.5


def radius(rng: random.Random, size: str = "medium") -> float:
    lo, hi = {"small": (0.10, 0.115), "medium": (0.125, 0.15), "large": (0.17, 0.19)}[size]
    return rng.uniform(lo, hi)


def make_objects(rng: random.Random, specs: list[tuple[str, str]],
                 radii: list[float] | None = None, **place_kw) -> list[SceneObject]:
    """Place objects given as (shape, colour) pairs; retries with smaller radii if crowded."""
    for attempt in range(20):
        rs = radii or [radius(rng) for _ in specs]
        if attempt >= 10:
            rs = [r * 0.85 for r in rs]
        centres = place(rng, rs, **place_kw)
        if centres is not None:
            return [SceneObject(s, c, x, y, r) for (s, c), (x, y), r in zip(specs, centres, rs)]
    raise RuntimeError(f"could not place {len(specs)} objects")


def distinct_specs(rng: random.Random, n: int, *, shapes=SHAPES, colors=COLOR_NAMES,
                   unique_shapes: bool = True, unique_colors: bool = True) -> list[tuple[str, str]]:
    """``n`` (shape, colour) pairs, all different; optionally no repeated shape or colour."""
    ss = rng.sample(list(shapes), n) if unique_shapes else [rng.choice(shapes) for _ in range(n)]
    cs = rng.sample(list(colors), n) if unique_colors else [rng.choice(colors) for _ in range(n)]
    specs = list(zip(ss, cs))
    if len(set(specs)) != n:
        return distinct_specs(rng, n, shapes=shapes, colors=colors, unique_shapes=unique_shapes,
                              unique_colors=unique_colors)
    return specs


def article(word: str) -> str:
    """The indefinite article for ``word`` ("an orange star", "a red circle")."""
    return "an" if word[:1] in tuple("aeiou") else "a"


def caption(objects: list[SceneObject]) -> str:
    """Objects left to right: ``"red circle , blue star"``."""
    return " , ".join(o.name for o in sorted(objects, key=lambda o: o.x))


def pack(rng: random.Random, example: TrainExample) -> list[dict[str, str]]:
    """A LLaVA conversation: the QAs, the caption turn (if any) at a random position, and the
    image placeholder at the start of the first human turn."""
    qas = list(example.qas)
    if example.caption is not None:
        qas.insert(rng.randint(0, len(qas)), (CAPTION_QUESTION, example.caption))
    turns = []
    for i, (q, a) in enumerate(qas):
        turns.append({"from": "human", "value": f"{IMAGE_TOKEN}\n{q}" if i == 0 else q})
        turns.append({"from": "gpt", "value": a})
    return turns


def maybe_caption(rng: random.Random, text: str) -> str | None:
    return text if rng.random() < 0.5 else None


# --- spatial language ---------------------------------------------------------------------------


def side_of(obj: SceneObject, margin: float = 0.1) -> tuple[str | None, str | None]:
    """("left"/"right"/None, "top"/"bottom"/None) of the object's centre relative to the middle."""
    h = "left" if obj.x < 0.5 - margin else "right" if obj.x > 0.5 + margin else None
    v = "top" if obj.y < 0.5 - margin else "bottom" if obj.y > 0.5 + margin else None
    return h, v


def relation(a: SceneObject, b: SceneObject, margin: float = 0.12) -> list[str]:
    """Relations of ``a`` to ``b`` that hold with at least ``margin`` (fractions of S)."""
    out = []
    if a.x < b.x - margin:
        out.append("left")
    if a.x > b.x + margin:
        out.append("right")
    if a.y < b.y - margin:
        out.append("above")
    if a.y > b.y + margin:
        out.append("below")
    return out


def localisation_qas(rng: random.Random, objects: list[SceneObject]) -> list[tuple[str, str]]:
    """Easy localisation sub-skills for spatial tasks (design section 8): which side / quadrant."""
    qas = []
    for obj in rng.sample(objects, min(2, len(objects))):
        h, v = side_of(obj)
        choices = []
        if h:
            choices.append((f"Is the {obj.name} on the left or the right?", h))
        if v:
            choices.append((f"Is the {obj.name} at the top or the bottom?", v))
        if h and v:
            choices.append((f"Where is the {obj.name}?", f"{v} {h}"))
        if choices:
            qas.append(rng.choice(choices))
    return qas


def pick_font(rng: random.Random, ctx: Context) -> str | None:
    """Train uses train fonts only; val/test use a held-out (test-only) font half of the time."""
    fonts = ctx.assets.fonts
    if ctx.split != "train" and rng.random() < 0.5:
        return rng.choice(fonts["heldout"])
    return rng.choice(fonts["train"])


SIGN_INK = {"white": (15, 15, 15), "yellow": (15, 15, 15), "orange": (15, 15, 15),
            "green": (15, 15, 15), "red": (250, 250, 250), "blue": (250, 250, 250),
            "purple": (250, 250, 250), "gray": (250, 250, 250)}
