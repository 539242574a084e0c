"""Scene graphs and the PIL rendering engine of MiniVL-10 (BENCHMARK_DESIGN.md section 5.1).

A ``Scene`` is a small scene graph: a background, a list of objects (shape or icon, colour,
centre, radius, listed back to front) and a list of signs with text. All geometry is in
fractions of the image side, so one scene renders at any size. ``render`` draws it on a canvas
at ``SCALE`` times the target size and downsamples with LANCZOS, which antialiases edges and
text, then adds pixel noise. Tasks with custom pictures (charts, magnets, beakers, digits) draw
on a ``Canvas`` directly. ``degrade`` applies VizWiz-style capture faults to a rendered image.

Every function is deterministic given its arguments; randomness comes in only through the
``numpy.random.Generator`` passed for the pixel noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from switchkd.data.assets import Assets

SCALE = 4  # draw at 4x the target size, then LANCZOS-downsample

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35), "green": (30, 175, 60), "blue": (45, 95, 240), "yellow": (250, 220, 30),
    "purple": (160, 60, 215), "orange": (250, 140, 20), "white": (245, 245, 245),
    "gray": (135, 135, 135),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star")
POLYGON_SIDES = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}
OUTLINE = (20, 20, 20)


@dataclass(frozen=True)
class Background:
    """``kind``: plain (flat colour), photo (a darkened crop), stripes or checker (two colours).

    ``photo`` indexes ``assets.photos[pool]``; ``box`` is the crop (x0, y0, x1, y1) in fractions
    of the photo; ``gain`` darkens it so that objects stand out.
    """

    kind: str
    color: tuple[int, int, int] = (60, 60, 60)
    color2: tuple[int, int, int] = (90, 90, 90)
    photo: int = -1
    pool: str = "train"
    box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    gain: float = 1.0
    period: float = 0.25


@dataclass(frozen=True)
class SceneObject:
    """One object: a procedural shape, or an icon (``icon`` names an ``IconBank`` image)."""

    shape: str
    color: str
    x: float
    y: float
    r: float
    icon: str | None = None

    @property
    def name(self) -> str:
        return self.icon or f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Sign:
    """A coloured rectangle centred at (x, y) of size (w, h) carrying ``text``."""

    x: float
    y: float
    w: float
    h: float
    color: str
    text: str
    font: str | None
    ink: tuple[int, int, int] = (15, 15, 15)


@dataclass
class Scene:
    background: Background
    objects: list[SceneObject] = field(default_factory=list)
    signs: list[Sign] = field(default_factory=list)
    noise: float = 4.0  # std of the Gaussian pixel noise added after downsampling (0..255 scale)


def shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Polygon vertices (canvas pixels) for a shape of nominal radius ``r`` centred at (cx, cy)."""
    if shape == "square":
        h = 0.86 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "diamond":
        return [(cx, cy - 1.15 * r), (cx + 0.85 * r, cy), (cx, cy + 1.15 * r), (cx - 0.85 * r, cy)]
    if shape == "cross":
        a, t = 1.05 * r, 0.36 * r
        return [(cx - t, cy - a), (cx + t, cy - a), (cx + t, cy - t), (cx + a, cy - t),
                (cx + a, cy + t), (cx + t, cy + t), (cx + t, cy + a), (cx - t, cy + a),
                (cx - t, cy + t), (cx - a, cy + t), (cx - a, cy - t), (cx - t, cy - t)]
    if shape == "star":
        pts = []
        for i in range(10):
            rad = 1.2 * r if i % 2 == 0 else 0.5 * r
            ang = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + rad * math.cos(ang), cy + 0.1 * r + rad * math.sin(ang)))
        return pts
    if shape in ("triangle", "pentagon", "hexagon"):
        n = POLYGON_SIDES[shape]
        rad = {3: 1.2, 5: 1.08, 6: 1.05}[n] * r
        dy = 0.2 * r if n == 3 else 0.0  # centre the triangle's bounding box
        return [(cx + rad * math.cos(-math.pi / 2 + 2 * math.pi * i / n),
                 cy + dy + rad * math.sin(-math.pi / 2 + 2 * math.pi * i / n)) for i in range(n)]
    raise ValueError(f"unknown shape {shape!r}")


class Canvas:
    """A ``SCALE``x RGB drawing surface; all coordinates are fractions of the image side."""

    def __init__(self, size: int, background: Background, assets: Assets):
        self.size = size
        self.w = size * SCALE
        self.assets = assets
        self.image = self._background(background)
        self.draw = ImageDraw.Draw(self.image)

    def _background(self, bg: Background) -> Image.Image:
        w = self.w
        if bg.kind == "photo":
            photo = self.assets.photos[bg.pool][bg.photo]
            x0, y0, x1, y1 = bg.box
            crop = photo.crop((round(x0 * photo.width), round(y0 * photo.height),
                               round(x1 * photo.width), round(y1 * photo.height)))
            arr = np.asarray(crop.resize((w, w), Image.BILINEAR), dtype=np.float32) * bg.gain
            return Image.fromarray(arr.clip(0, 255).astype(np.uint8))
        image = Image.new("RGB", (w, w), bg.color)
        if bg.kind in ("stripes", "checker"):
            draw = ImageDraw.Draw(image)
            step = max(2, round(bg.period * w))
            for i, a in enumerate(range(0, w, step)):
                if bg.kind == "stripes":
                    if i % 2:
                        draw.rectangle((a, 0, a + step - 1, w), fill=bg.color2)
                else:
                    for j, b in enumerate(range(0, w, step)):
                        if (i + j) % 2:
                            draw.rectangle((a, b, a + step - 1, b + step - 1), fill=bg.color2)
        elif bg.kind != "plain":
            raise ValueError(f"unknown background kind {bg.kind!r}")
        return image

    def px(self, v: float) -> float:
        return v * self.w

    def shape(self, shape: str, color: tuple[int, int, int], x: float, y: float, r: float,
              outline: tuple[int, int, int] | None = OUTLINE) -> None:
        cx, cy, rr = self.px(x), self.px(y), self.px(r)
        width = max(1, round(0.16 * rr)) if outline else 0
        if shape == "circle":
            self.draw.ellipse((cx - rr, cy - rr, cx + rr, cy + rr), fill=color, outline=outline,
                              width=width)
        else:
            self.draw.polygon(shape_points(shape, cx, cy, rr), fill=color, outline=outline,
                              width=width)

    def icon(self, rgba: np.ndarray, x: float, y: float, r: float) -> None:
        side = max(2, round(2 * self.px(r)))
        im = Image.fromarray(rgba, "RGBA")
        scale = side / max(im.size)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                       Image.LANCZOS)
        self.image.paste(im, (round(self.px(x) - im.width / 2), round(self.px(y) - im.height / 2)),
                         im)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill=None, outline=None,
             width: float = 0.0) -> None:
        self.draw.rectangle((self.px(x0), self.px(y0), self.px(x1), self.px(y1)), fill=fill,
                            outline=outline, width=max(1, round(self.px(width))) if outline else 0)

    def ellipse(self, x: float, y: float, rx: float, ry: float, fill) -> None:
        self.draw.ellipse((self.px(x - rx), self.px(y - ry), self.px(x + rx), self.px(y + ry)),
                          fill=fill)

    def line(self, points: list[tuple[float, float]], fill, width: float) -> None:
        self.draw.line([(self.px(a), self.px(b)) for a, b in points], fill=fill,
                       width=max(1, round(self.px(width))), joint="curve")

    def text(self, text: str, x: float, y: float, h: float, font: str | None, fill,
             max_w: float = 1.0) -> None:
        """Draw ``text`` centred at (x, y), scaled to height ``h`` (and at most ``max_w`` wide)."""
        ref = self.assets.font(font, 100)
        left, top, right, bottom = ref.getbbox(text)
        scale = min(self.px(h) / max(1, bottom - top), self.px(max_w) / max(1, right - left))
        size = max(4, int(100 * scale))
        f = self.assets.font(font, size)
        left, top, right, bottom = f.getbbox(text)
        self.draw.text((self.px(x) - (left + right) / 2, self.px(y) - (top + bottom) / 2), text,
                       font=f, fill=fill)

    def sign(self, sign: Sign) -> None:
        x0, y0 = sign.x - sign.w / 2, sign.y - sign.h / 2
        self.rect(x0, y0, x0 + sign.w, y0 + sign.h, fill=COLORS[sign.color], outline=OUTLINE,
                  width=0.02)
        self.text(sign.text, sign.x, sign.y, 0.72 * sign.h, sign.font, sign.ink,
                  max_w=0.84 * sign.w)

    def gray_image(self, values: np.ndarray, box: tuple[float, float, float, float],
                   ink: tuple[int, int, int], paper: tuple[int, int, int] | None) -> None:
        """Paste a grayscale array (values in 0..1, 1 = ink) into ``box``; ``paper=None`` keeps
        the background where there is no ink."""
        x0, y0, x1, y1 = (round(self.px(v)) for v in box)
        alpha = Image.fromarray((values * 255).clip(0, 255).astype(np.uint8), "L")
        alpha = alpha.resize((x1 - x0, y1 - y0), Image.BICUBIC)
        if paper is not None:
            self.draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=paper)
        self.image.paste(Image.new("RGB", alpha.size, ink), (x0, y0), alpha)

    def to_array(self, np_rng: np.random.Generator, noise: float) -> np.ndarray:
        """Downsample to the target size (LANCZOS) and add Gaussian pixel noise: (S, S, 3) uint8."""
        small = np.asarray(self.image.resize((self.size, self.size), Image.LANCZOS),
                           dtype=np.float32)
        if noise > 0:
            small = small + np_rng.normal(0.0, noise, small.shape).astype(np.float32)
        return small.round().clip(0, 255).astype(np.uint8)


def draw_objects(canvas: Canvas, objects: list[SceneObject]) -> None:
    for obj in objects:
        if obj.icon is not None:
            canvas.icon(canvas.assets.icons.images[obj.icon], obj.x, obj.y, obj.r)
        else:
            canvas.shape(obj.shape, COLORS[obj.color], obj.x, obj.y, obj.r)


def render(scene: Scene, assets: Assets, size: int, np_rng: np.random.Generator) -> np.ndarray:
    """Render a scene graph to an (S, S, 3) uint8 array."""
    canvas = Canvas(size, scene.background, assets)
    for sign in scene.signs:
        canvas.sign(sign)
    draw_objects(canvas, scene.objects)
    return canvas.to_array(np_rng, scene.noise)


def degrade(image: np.ndarray, *, blur: float = 0.0, gain: float = 1.0, gamma: float = 1.0,
            rotate: int = 0) -> np.ndarray:
    """VizWiz-style capture faults on a rendered (S, S, 3) uint8 image.

    ``blur``: Gaussian radius in output pixels; ``gain`` < 1 under-exposes, ``gamma`` < 1
    over-exposes (applied to [0, 1] intensities); ``rotate``: 0, 90, 180 or 270 degrees.
    """
    im = Image.fromarray(image)
    if blur > 0:
        im = im.filter(ImageFilter.GaussianBlur(blur))
    arr = np.asarray(im, dtype=np.float32) / 255.0
    arr = np.power(arr.clip(0, 1), gamma) * gain
    out = (arr * 255.0).round().clip(0, 255).astype(np.uint8)
    if rotate:
        out = np.ascontiguousarray(np.rot90(out, k=rotate // 90))
    return out
