"""Built-in synthetic dataset: photo-like faces and their comic twins, in the Kaggle layout.

A deterministic, seedable stand-in for the Kaggle "comic faces paired" dataset, so examples,
tests and benchmarks need no download. It writes ``OUT/face/NNNNN.jpg`` (a shaded, textured,
noisy rendering of a face) and ``OUT/comics/NNNNN.jpg`` (the same face, same pose and colours,
drawn with flat colours, cel shadows and black ink outlines). Files pair by stem.

Each pair draws from its own generator seeded by ``(seed, index)``, so the files are byte-identical
for a given seed and do not depend on the order (or the number) of pairs rendered before them.

The two classes are made hard to tell apart by one global statistic: a random brightness,
contrast and gamma is applied to both images of a pair, and the comic's luminance mean and
spread are matched (with jitter) to its photo's. What separates them is local: noise, smooth
shading and soft edges against flat regions and ink lines -- learnable by a small CNN, much
less so by a linear model on raw pixels.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, fields
from numbers import Integral
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from tqdm import tqdm

from tellapart._errors import UserError

__all__ = ["SynthConfig", "render_pair", "synth_faces"]


@dataclass(frozen=True)
class SynthConfig:
    """What `synth_faces` writes. Invalid values raise `UserError` naming the option."""

    pairs: int = 600  # number of face/comic pairs (2 * pairs images)
    size: int = 256  # side of the square images, pixels
    seed: int = 0  # the same seed gives byte-identical files (with the same NumPy and Pillow)
    face_dir: str = "face"  # folder of the photo-like faces, under the output folder
    comic_dir: str = "comics"  # folder of their comic twins, under the output folder
    quality: int = 90  # JPEG quality, 1-100

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            wanted, kind = (Integral, "a whole number") if f.type in ("int", int) else (str, "text")
            if not isinstance(value, wanted) or isinstance(value, bool):
                raise UserError(f"synth option {f.name} must be {kind}, got {value!r}")
        if self.pairs < 1:
            raise UserError(f"synth option pairs must be at least 1, got {self.pairs}")
        if self.size < 32:
            raise UserError(f"synth option size must be at least 32 pixels, got {self.size}")
        if self.seed < 0:
            raise UserError(f"synth option seed must be 0 or more, got {self.seed}")
        if not 1 <= self.quality <= 100:
            raise UserError(f"synth option quality must be between 1 and 100, got {self.quality}")
        for name in ("face_dir", "comic_dir"):
            folder = getattr(self, name)
            if folder in ("", ".", "..") or "/" in folder or "\\" in folder:
                raise UserError(f"synth option {name} must be a plain folder name, got {folder!r}")
        if self.face_dir == self.comic_dir:
            raise UserError(f"synth options face_dir and comic_dir must differ, both are {self.face_dir!r}")


def synth_faces(out: Path, cfg: SynthConfig = SynthConfig(), *, progress: bool = True) -> Path:
    """Writes the synthetic dataset under `out` and returns `out`.

    Args:
        out: Folder to create; it must not exist yet or be empty.
        cfg: How many pairs, their size, seed, folder names and JPEG quality.
        progress: Show a progress bar.

    Returns:
        `out`, holding ``cfg.face_dir/NNNNN.jpg`` and ``cfg.comic_dir/NNNNN.jpg``.

    Raises:
        UserError: `out` is a file or a non-empty folder.
    """
    out = Path(out)
    _require_empty_folder(out)
    folders = (out / cfg.face_dir, out / cfg.comic_dir)
    width = max(5, len(str(cfg.pairs - 1)))  # stems sort in pair order
    try:
        for folder in folders:
            folder.mkdir(parents=True)
        for i in tqdm(range(cfg.pairs), desc="synth faces", unit="pair", disable=not progress):
            images = render_pair(np.random.default_rng([cfg.seed, i]), cfg.size)
            for folder, pixels in zip(folders, images):
                Image.fromarray(pixels).save(folder / f"{i:0{width}d}.jpg", "JPEG", quality=cfg.quality)
    except BaseException:
        # Leave the folder empty rather than half-written, so a rerun is not refused.
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return out


def render_pair(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Renders one face twice: photo-like and as a comic.

    Args:
        rng: Source of every random choice; the same generator state gives the same pair.
        size: Side of the square images, pixels.

    Returns:
        ``(photo, comic)``, each a (size, size, 3) uint8 RGB array of the same face and pose.
    """
    # Pixel noise draws a number of values that depends on size; everything else draws from
    # `rng` alone, so one seed gives the same face at every size.
    noise = rng.spawn(1)[0]
    scene = _sample_scene(rng, size)
    clean = _shade_photo(rng, noise, scene)
    comic = _draw_comic(rng, scene, clean)
    photo = _finish_photo(rng, noise, clean)
    comic = _match_tone(rng, comic, photo)
    tone = _global_tone(rng)
    return tone(photo), tone(comic)


def _require_empty_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; choose a new or empty folder for the synthetic dataset")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; choose a new or empty folder, or delete it first")


# Region labels of a face's label map, painted back to front.
_BG, _CLOTH, _HAIR_BACK, _NECK, _EAR, _SKIN, _HAIR = 0, 1, 2, 3, 4, 5, 6
_EYE, _IRIS, _PUPIL, _BROW, _NOSE, _LIPS, _MOUTH = 7, 8, 9, 10, 11, 12, 13
_REGIONS = 14


def _group(*labels: int) -> np.ndarray:
    """A lookup table: ``_group(A, B)[label_map]`` is the mask of A and B, faster than np.isin."""
    table = np.zeros(_REGIONS, dtype=bool)
    table[list(labels)] = True
    return table


_FACE = _group(_SKIN, _EYE, _IRIS, _PUPIL, _BROW, _NOSE, _LIPS, _MOUTH)  # shaped by facial relief
_SHINY = _group(_EAR, _SKIN, _NOSE, _LIPS)  # get a specular highlight in photos
_FEATURES = _group(_EYE, _IRIS, _PUPIL, _BROW, _NOSE, _LIPS, _MOUTH)  # get thin comic outlines
_HAIRY = _group(_HAIR, _HAIR_BACK, _BROW)  # get streaks in photos
_CEL_SHADED = _group(_CLOTH, _HAIR_BACK, _NECK, _EAR, _SKIN, _HAIR, _NOSE, _LIPS)  # get a comic shadow tone
_INK = 2 * _REGIONS  # comic colour code of ink; codes below it are regions, lit or in shadow
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_TONE_LEVELS = 2048  # entries of the tone curve's lookup table

#: A gaussian bump of the face's surface: centre u, v; spread u, v (head radii); height.
_Bump = tuple[float, float, float, float, float]


@dataclass(frozen=True)
class _Pose:
    """Where the head is and how it is turned, in image coordinates ([-1, 1], y downwards)."""

    cx: float  # head centre
    cy: float
    a: float  # horizontal semi-axis of the head
    b: float  # vertical semi-axis of the head
    roll: float  # in-plane tilt, radians
    yaw: float  # sideways turn, as the shift of the facial features, head radii
    taper: float  # how much narrower the head gets towards the chin


@dataclass(frozen=True)
class _Canvas:
    """What is where in one face: region labels and surface normals, painted back to front."""

    labels: np.ndarray  # (H, W) uint8 region labels
    nx: np.ndarray  # (H, W) float32 surface normal, image x component (z faces the viewer)
    ny: np.ndarray  # (H, W) float32 surface normal, image y component
    occlusion: np.ndarray  # (H, W) float32 share of the ambient light that reaches a pixel

    @classmethod
    def blank(cls, size: int) -> _Canvas:
        zeros = np.zeros((size, size), dtype=np.float32)
        return cls(np.zeros((size, size), dtype=np.uint8), zeros, zeros.copy(), zeros + 1)

    def paint(
        self,
        mask: np.ndarray,
        label: int,
        nx: np.ndarray | float | None = None,
        ny: np.ndarray | float | None = None,
        occlusion: np.ndarray | float = 1.0,
    ) -> None:
        """Gives the pixels of `mask` a label, an occlusion and, unless None, a new normal."""
        self.labels[mask] = label
        for target, value in ((self.nx, nx), (self.ny, ny), (self.occlusion, occlusion)):
            if value is not None:
                target[mask] = value[mask] if isinstance(value, np.ndarray) else value


@dataclass(frozen=True)
class _Scene:
    """The geometry, light and colours both images of a pair are rendered from."""

    labels: np.ndarray  # (H, W) uint8 region labels
    light: np.ndarray  # (H, W) float32 diffuse light, about 0.2 (shadow) to 1.4 (lit)
    spec: np.ndarray  # (H, W) float32 specular highlight on skin, 0 to 1
    palette: np.ndarray  # (_REGIONS, 3) float32 base colour of each region, 0 to 1
    background: np.ndarray  # (H, W, 3) float32 photo background, 0 to 1
    below_nose: np.ndarray  # (H, W) bool: comics ink only the nose's lower outline


def _sample_scene(rng: np.random.Generator, size: int) -> _Scene:
    """Draws a pose, paints body, head and features, and lights them."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    x, y = np.meshgrid(c, c)
    pose = _sample_pose(rng)
    u, v = _head_coords(pose, x, y)
    canvas = _Canvas.blank(size)
    _paint_body(rng, canvas, pose, x, y)
    _paint_head(rng, canvas, pose, u, v)
    relief, nose_v = _paint_features(rng, canvas, pose, u, v)
    _add_relief(canvas, pose, u, v, relief)
    light, spec = _lighting(rng, canvas)
    return _Scene(
        labels=canvas.labels,
        light=light,
        spec=spec,
        palette=_sample_palette(rng),
        background=_background(rng, size),
        below_nose=v > nose_v,
    )


def _sample_pose(rng: np.random.Generator) -> _Pose:
    b = rng.uniform(0.44, 0.6)
    return _Pose(
        cx=rng.uniform(-0.15, 0.15),
        cy=rng.uniform(-0.2, 0.05),
        a=b * rng.uniform(0.72, 0.86),
        b=b,
        roll=rng.uniform(-0.3, 0.3),
        yaw=rng.uniform(-0.22, 0.22),
        taper=rng.uniform(0.08, 0.3),
    )


def _head_coords(pose: _Pose, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Head-local coordinates: the head is the unit disc, ``v`` runs from crown (-1) to chin (1)."""
    cos, sin = math.cos(pose.roll), math.sin(pose.roll)
    dx, dy = x - pose.cx, y - pose.cy
    u = (cos * dx + sin * dy) / pose.a
    v = (-sin * dx + cos * dy) / pose.b
    return u * (1 + pose.taper * np.clip(v, 0, None)), v


def _to_image(pose: _Pose, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Turns a head-local direction back into image axes (undoes the roll)."""
    cos, sin = math.cos(pose.roll), math.sin(pose.roll)
    return cos * u - sin * v, sin * u + cos * v


def _paint_body(rng: np.random.Generator, canvas: _Canvas, pose: _Pose, x: np.ndarray, y: np.ndarray) -> None:
    """A neck, then shoulders in clothes with a skin-coloured neckline."""
    neck_x = pose.cx + math.sin(pose.roll) * pose.b * 0.7
    neck_w = pose.a * rng.uniform(0.42, 0.58)
    cylinder = np.clip((x - neck_x) / neck_w, -1, 1)
    chin_shadow = 1 - 0.6 * np.exp(-np.clip(y - pose.cy - pose.b * 0.85, 0, None) / 0.12)
    canvas.paint((np.abs(x - neck_x) < neck_w) & (y > pose.cy), _NECK, cylinder, 0.0, chin_shadow)
    torso_y = rng.uniform(0.85, 1.15)
    torso = _ellipse(x, y, neck_x, torso_y, rng.uniform(0.6, 0.95), rng.uniform(0.3, 0.45))
    canvas.paint(torso, _CLOTH, 0.8 * np.clip(x - neck_x, -1, 1), np.clip(1.2 * (y - torso_y), -0.8, 0.8))
    neckline = _ellipse(x, y, neck_x, torso_y - rng.uniform(0.25, 0.4), neck_w * 1.3, rng.uniform(0.1, 0.3))
    canvas.paint(torso & neckline, _NECK, 0.5 * cylinder, -0.3, chin_shadow)


def _paint_head(rng: np.random.Generator, canvas: _Canvas, pose: _Pose, u: np.ndarray, v: np.ndarray) -> None:
    """Hair hanging behind, ears, the head's skin and the hair over the forehead."""
    bald = rng.random() < 0.08
    if not bald:
        volume = rng.uniform(0.04, 0.3)  # how far hair stands off the head, head radii
        length = rng.uniform(-0.3, 1.6)  # where the hanging hair ends, head-local v
        straight = np.minimum(v + volume * 0.6, 0)  # straight sides below the crown
        back = (u * u + straight * straight < (1 + volume) ** 2) & (v < length) & (canvas.labels != _NECK)
        canvas.paint(back, _HAIR_BACK, *_to_image(pose, u / (1 + volume), straight / (1 + volume)))
    if bald or rng.random() < 0.6:
        ear_v = rng.uniform(-0.05, 0.15)
        ears = _ellipse(u, v, -0.97, ear_v, 0.16, 0.27) | _ellipse(u, v, 0.97, ear_v, 0.16, 0.27)
        canvas.paint(ears, _EAR, *_to_image(pose, 0.6 * np.sign(u), np.zeros_like(u)))
    head = u * u + v * v <= 1
    canvas.paint(head, _SKIN, *_to_image(pose, u, v))
    if not bald:
        hairline = rng.uniform(-0.8, -0.35) + rng.uniform(0.1, 0.9) * u * u
        hairline += rng.uniform(0, 0.08) * np.sin(rng.uniform(6, 16) * u + rng.uniform(0, 6.3))
        canvas.paint(head & (v < hairline), _HAIR)


def _paint_features(
    rng: np.random.Generator, canvas: _Canvas, pose: _Pose, u: np.ndarray, v: np.ndarray
) -> tuple[list[_Bump], float]:
    """Eyes (white, iris, pupil), brows, nose, lips and the mouth's gap, on the bare skin.

    Returns:
        The bumps and dents of the face's surface under the features, and the nose's height (v).
    """
    skin = canvas.labels == _SKIN  # a fringe hides what is under it
    yaw, ratio = pose.yaw, pose.b / pose.a  # ratio turns a v-radius into the u-radius of a circle
    eye_v, spacing = rng.uniform(-0.2, -0.02), rng.uniform(0.3, 0.42)
    eye_w = rng.uniform(0.13, 0.19)
    eye_h = eye_w * rng.uniform(0.35, 0.55)
    iris_r = eye_h * rng.uniform(0.8, 1.05)
    gaze = rng.uniform(-0.3, 0.3) * eye_w
    brow_v = eye_v - eye_h - rng.uniform(0.05, 0.13)
    brow_th = rng.uniform(0.03, 0.065)
    brow_slope = rng.uniform(-0.2, 0.25)  # > 0: the outer ends are higher
    brow_bend = rng.uniform(-0.01, 0.08)  # > 0: arched
    eye_us = []
    for side in (-1, 1):
        squash = 1 + side * 0.8 * yaw  # the eye turned away is foreshortened
        eu = yaw + side * spacing * squash
        eye_us.append(eu)
        eye = _ellipse(u, v, eu, eye_v, eye_w * squash, eye_h) & skin
        canvas.paint(eye, _EYE)
        canvas.paint(eye & _ellipse(u, v, eu + gaze, eye_v, iris_r * ratio * squash, iris_r), _IRIS)
        pupil = _ellipse(u, v, eu + gaze, eye_v, 0.45 * iris_r * ratio * squash, 0.45 * iris_r)
        canvas.paint(eye & pupil, _PUPIL)
        brow = _arc(u, v, eu, brow_v, eye_w * 1.25 * squash, brow_th, -side * brow_slope, brow_bend)
        canvas.paint(brow & skin, _BROW)
    nose_u, nose_v = yaw * 1.4, rng.uniform(0.16, 0.3)
    nose = _ellipse(u, v, nose_u, nose_v, rng.uniform(0.09, 0.15), rng.uniform(0.05, 0.09))
    canvas.paint(nose & skin, _NOSE)
    mouth_u, mouth_v = yaw * 1.1, rng.uniform(0.45, 0.62)
    mouth_w, lip_th = rng.uniform(0.17, 0.32), rng.uniform(0.035, 0.08)
    smile = rng.uniform(-0.09, 0.04)  # < 0: corners up
    canvas.paint(_arc(u, v, mouth_u, mouth_v, mouth_w, lip_th, 0.0, smile) & skin, _LIPS)
    gap = lip_th * (rng.uniform(0.5, 1.2) if rng.random() < 0.25 else 0.25)  # open or closed
    canvas.paint(_arc(u, v, mouth_u, mouth_v, mouth_w * 0.92, gap, 0.0, smile) & skin, _MOUTH)
    relief = [
        (nose_u, nose_v - 0.12, 0.06, 0.2, 0.55),  # bridge
        (nose_u, nose_v, 0.09, 0.07, 0.45),  # tip
        (yaw, brow_v, 0.4, 0.06, 0.25),  # brow ridge
        (eye_us[0], eye_v, 0.14, 0.09, -0.35),  # eye sockets
        (eye_us[1], eye_v, 0.14, 0.09, -0.35),
        (yaw - 0.45, 0.3, 0.18, 0.16, 0.15),  # cheeks
        (yaw + 0.45, 0.3, 0.18, 0.16, 0.15),
        (mouth_u, mouth_v + 0.3, 0.2, 0.1, 0.2),  # chin
    ]
    return relief, nose_v


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Pixels inside an axis-aligned ellipse (in whatever coordinates `x`, `y` are)."""
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1


def _arc(
    u: np.ndarray, v: np.ndarray, cu: float, cv: float, half: float, thick: float, slope: float, bend: float
) -> np.ndarray:
    """A stroke round ``(cu, cv)``, tapering to points `half` to each side.

    Its centre line falls by `slope` per unit of u, and its ends sit `bend` below its middle
    (negative: the ends are higher, as in a smile).
    """
    du = (u - cu) / half
    centre = cv + slope * (u - cu) + bend * (du * du - 0.5)
    return (np.abs(du) < 1) & (np.abs(v - centre) < thick * np.sqrt(np.clip(1 - du * du, 0, 1)))


def _add_relief(canvas: _Canvas, pose: _Pose, u: np.ndarray, v: np.ndarray, relief: list[_Bump]) -> None:
    """Bends the face's normals over bumps (nose, cheeks, chin) and darkens its dents (eye sockets)."""
    face = _FACE[canvas.labels]
    rows, cols = np.flatnonzero(face.any(axis=1)), np.flatnonzero(face.any(axis=0))
    if rows.size == 0:
        return
    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # only the face's pixels matter
    bu, bv, inside = u[box], v[box], face[box]
    slope_u, slope_v, dents = np.zeros_like(bu), np.zeros_like(bu), np.zeros_like(bu)
    for cu, cv, su, sv, height in relief:
        du, dv = bu - cu, bv - cv
        g = height * np.exp(-0.5 * ((du / su) ** 2 + (dv / sv) ** 2))
        slope_u -= g * du / (su * su)
        slope_v -= g * dv / (sv * sv)
        if height < 0:
            dents += g
    depth = np.sqrt(np.clip(1 - bu * bu - bv * bv, 0, 1)) * -0.08  # flatter towards the rim
    tilt_x, tilt_y = _to_image(pose, slope_u * depth, slope_v * depth)
    canvas.nx[box][inside] += tilt_x[inside]
    canvas.ny[box][inside] += tilt_y[inside]
    canvas.occlusion[box][inside] *= 1 + 0.4 * dents[inside]


def _lighting(rng: np.random.Generator, canvas: _Canvas) -> tuple[np.ndarray, np.ndarray]:
    """Lambertian light from a random direction, and a specular highlight on skin.

    Returns:
        ``(light, spec)``: diffuse light including exposure, and the highlight, each (H, W).
    """
    nx, ny = canvas.nx, canvas.ny
    long = np.maximum(nx * nx + ny * ny, 0.98)  # keep the normals unit length, facing the viewer
    scale = np.sqrt(0.98 / long)
    nx, ny = nx * scale, ny * scale
    nz = np.sqrt(1 - nx * nx - ny * ny)
    elev = rng.uniform(0.35, 0.95)  # z of the light's direction: how frontal it is
    azim = rng.uniform(0, 2 * np.pi)
    lx, ly = math.sqrt(1 - elev * elev) * math.cos(azim), math.sqrt(1 - elev * elev) * math.sin(azim)
    lambert = np.clip(nx * lx + ny * ly + nz * elev, 0, 1)
    ambient = rng.uniform(0.22, 0.45)
    light = (ambient * canvas.occlusion + (1 - ambient) * lambert) * rng.uniform(1.1, 1.35)  # exposure
    shiny = _SHINY[canvas.labels]
    reflect_z = 2 * lambert[shiny] * nz[shiny] - elev  # the viewer looks along -z
    spec = np.zeros_like(light)
    spec[shiny] = np.clip(reflect_z, 0, 1) ** rng.uniform(8, 30)
    return light, spec


def _sample_palette(rng: np.random.Generator) -> np.ndarray:
    """Base colours of every region: skin tones from very dark to very light, any hair colour."""
    pal = np.zeros((_REGIONS, 3), dtype=np.float32)
    t = rng.random()
    skin = (1 - t) * np.array([0.3, 0.17, 0.1]) + t * np.array([0.98, 0.84, 0.74])
    skin = np.clip(skin * rng.uniform(0.92, 1.08, 3), 0, 1)
    hairs = ([0.05, 0.04, 0.04], [0.3, 0.18, 0.1], [0.55, 0.35, 0.15], [0.9, 0.78, 0.5],
             [0.6, 0.22, 0.08], [0.7, 0.7, 0.72], rng.random(3))  # fmt: skip
    hair = np.clip(np.array(hairs[rng.integers(len(hairs))]) * rng.uniform(0.8, 1.15, 3), 0, 1)
    irises = ([0.3, 0.18, 0.08], [0.25, 0.45, 0.7], [0.3, 0.5, 0.3], [0.45, 0.35, 0.2])
    pal[[_NECK, _EAR, _SKIN]] = skin
    pal[_NOSE] = skin * [0.95, 0.88, 0.86]
    pal[_LIPS] = skin * 0.55 + np.array([0.75, 0.3, 0.32]) * rng.uniform(0.25, 0.45)
    pal[_MOUTH] = [0.25, 0.06, 0.07]
    pal[[_HAIR, _HAIR_BACK]] = hair
    pal[_BROW] = hair * 0.7
    pal[_EYE] = np.array([0.93, 0.92, 0.88]) * rng.uniform(0.85, 1.0)
    pal[_IRIS] = irises[rng.integers(len(irises))]
    pal[_PUPIL] = [0.03, 0.03, 0.04]
    pal[_CLOTH] = rng.random(3)
    return pal


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A muted two-colour gradient with blotches, as (size, size, 3) float32."""
    cells = int(rng.integers(3, 7))  # the blotches' scale: a few across the image
    c = np.linspace(-1, 1, cells)
    x, y = np.meshgrid(c, c)
    angle = rng.uniform(0, 2 * np.pi)
    t = np.clip((math.cos(angle) * x + math.sin(angle) * y) * 0.5 + 0.5, 0, 1)[..., None]
    c0, c1 = rng.random((2, 3))
    grey = (c0 + c1).mean() / 2
    coarse = grey + ((1 - t) * c0 + t * c1 - grey) * rng.uniform(0.15, 0.8)  # muted, like most rooms
    coarse += rng.standard_normal((cells, cells, 3)) * rng.uniform(0.02, 0.08)
    # Upsampling 8-bit colour is the fast way; the photo's noise hides the banding.
    smooth = Image.fromarray(_to_uint8(coarse)).resize((size, size), Image.BICUBIC)
    return np.asarray(smooth, dtype=np.float32) / 255


def _smooth_noise(rng: np.random.Generator, size: int, rows: int, cols: int) -> np.ndarray:
    """Gaussian noise on a coarse ``rows x cols`` grid, bicubically upsampled to (size, size)."""
    grid = rng.standard_normal((rows, cols)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, "F").resize((size, size), Image.BICUBIC))


def _shade_photo(rng: np.random.Generator, noise: np.random.Generator, scene: _Scene) -> np.ndarray:
    """The noiseless photo: base colours times light and texture, plus highlights."""
    labels = scene.labels
    size = labels.shape[0]
    tint = rng.uniform(0.9, 1.1, 3).astype(np.float32)  # colour of the light
    # Material textures: streaky hair, blotchy skin, cloth folds.
    streaks = _smooth_noise(noise, size, max(4, size // 48), max(8, size // 3))
    blotches = _smooth_noise(noise, size, max(8, size // 6), max(8, size // 6))
    folds = _smooth_noise(noise, size, 6, 6)
    texture = np.where(_HAIRY[labels], 0.18 * streaks, 0.03 * blotches)
    texture = np.where(labels == _CLOTH, 0.12 * folds, texture)
    photo = (scene.palette * tint)[labels] * (scene.light * (1 + texture))[..., None]
    photo += (scene.spec * np.float32(rng.uniform(0.1, 0.35)))[..., None] * tint
    photo = np.where((labels == _BG)[..., None], scene.background, photo)
    return np.clip(photo, 0, 1)


def _finish_photo(rng: np.random.Generator, noise: np.random.Generator, clean: np.ndarray) -> np.ndarray:
    """Optics and sensor: a slight blur, then luminance and colour noise."""
    size = clean.shape[0]
    radius = rng.uniform(0.5, 1.3) * size / 256
    blurred = Image.fromarray(_to_uint8(clean)).filter(ImageFilter.GaussianBlur(radius))
    photo = np.asarray(blurred, dtype=np.float32) / 255
    sigma = np.float32(rng.uniform(0.01, 0.035))
    grain = noise.standard_normal((size, size, 1), dtype=np.float32)
    # Colour noise is coarser than luminance noise in real cameras (demosaicing).
    half = (size + 1) // 2
    chroma = noise.standard_normal((half, half, 3), dtype=np.float32).repeat(2, 0).repeat(2, 1)[:size, :size]
    return photo + sigma * (0.8 * grain + 0.5 * chroma)


def _draw_comic(rng: np.random.Generator, scene: _Scene, clean: np.ndarray) -> np.ndarray:
    """The comic twin: flat region colours, cel shadows, posterisation and black ink outlines."""
    labels = scene.labels
    # A region's flat colour is its mean colour in the photo, so the twins agree.
    flat = _region_means(labels, clean) * rng.uniform(1.0, 1.15)
    ink = rng.uniform(0.0, 0.12, 3)  # nearly black, a little tinted
    table = np.concatenate([flat, flat * rng.uniform(0.6, 0.8), ink[None]])  # lit, shadow, ink
    codes = labels.copy()
    if rng.random() < 0.75:  # two-tone cel shading
        shadow = _CEL_SHADED[labels] & (scene.light < rng.uniform(0.45, 0.6))
        codes[shadow] += _REGIONS
    background = _comic_background(rng, scene, flat[_BG])
    codes[_ink(rng, scene)] = _INK
    style = _comic_filter(rng)
    comic = _to_uint8(style(table))[codes]
    if background is not None:
        bg = codes == _BG
        comic[bg] = _to_uint8(style(background[bg]))
    # Anti-aliasing, as a comic filter's output has: a [1, 2, 1] blur at 256 pixels.
    smooth = Image.fromarray(comic).filter(ImageFilter.BoxBlur(0.5 * labels.shape[0] / 256))
    return np.asarray(smooth, dtype=np.float32) / 255


def _region_means(labels: np.ndarray, image: np.ndarray) -> np.ndarray:
    """The mean colour of each region label, as (_REGIONS, 3); black for absent regions."""
    flat = labels.ravel()
    counts = np.maximum(np.bincount(flat, minlength=_REGIONS), 1)
    sums = [np.bincount(flat, image[..., ch].ravel(), minlength=_REGIONS) for ch in range(3)]
    return np.stack(sums, axis=-1) / counts[:, None]


def _comic_filter(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """The colour grading of a comic filter: more saturation, and often a few brightness levels."""
    saturation = rng.uniform(1.1, 1.6)
    levels = int(rng.integers(5, 11)) if rng.random() < 0.6 else 0

    def style(rgb: np.ndarray) -> np.ndarray:
        grey = (rgb @ _LUMA)[..., None]
        rgb = np.clip(grey + (rgb - grey) * saturation, 0, 1)
        if not levels:
            return rgb
        # Posterise brightness, not each channel: per-channel levels turn beige skin olive.
        stepped = np.round(grey * (levels - 1)) / (levels - 1)
        return np.clip(rgb * (np.maximum(stepped, 0.5 / levels) / np.maximum(grey, 1e-3)), 0, 1)

    return style


def _comic_background(rng: np.random.Generator, scene: _Scene, mean: np.ndarray) -> np.ndarray | None:
    """A banded gradient, a halftone dot screen, or None for a flat fill of the mean colour."""
    style = rng.integers(3)
    if style == 0:
        return None
    if style == 1:
        bands = rng.integers(3, 6)
        return np.round(scene.background * bands) / bands
    size = scene.labels.shape[0]
    c = np.arange(size, dtype=np.float32) * (2 * np.pi / rng.uniform(5, 10) * 256 / size)
    gx, gy = np.meshgrid(c, c)
    angle = rng.uniform(0, np.pi / 2)
    rx, ry = math.cos(angle) * gx + math.sin(angle) * gy, -math.sin(angle) * gx + math.cos(angle) * gy
    dots = (np.cos(rx) * np.cos(ry) > rng.uniform(0.2, 0.6))[..., None]
    return np.where(dots, mean * rng.uniform(0.6, 0.85), mean * 1.05)


def _ink(rng: np.random.Generator, scene: _Scene) -> np.ndarray:
    """Ink lines along region boundaries: thick round the silhouette, thin round the eyes and mouth."""
    labels = scene.labels
    # Outlines of the big shapes: head, hair (front and back as one), ears, neck, clothes.
    shapes = _edges(np.where(_FEATURES[labels], _SKIN, np.where(labels == _HAIR_BACK, _HAIR, labels)))
    # The nose is drawn as its lower outline only, as in most comics.
    details = _edges(np.where(labels == _NOSE, _SKIN, labels)) | (_edges(labels == _NOSE) & scene.below_nose)
    scale = labels.shape[0] / 256  # line widths below are in pixels at 256 x 256
    outline = _dilate(shapes & _dilate(labels == _BG, 3), _odd(rng.uniform(5, 8) * scale))
    inner = _dilate(shapes, _odd(rng.uniform(3, 6) * scale))
    return outline | inner | _dilate(details, _odd(rng.uniform(1.5, 4) * scale))


def _edges(regions: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour is in another region: one-pixel boundaries."""
    edge = np.zeros(regions.shape, dtype=bool)
    edge[:, :-1] |= regions[:, :-1] != regions[:, 1:]
    edge[:-1, :] |= regions[:-1, :] != regions[1:, :]
    return edge


def _odd(width: float) -> int:
    """The odd integer at or just below `width`, at least 1."""
    return max(1, (int(width) - 1) // 2 * 2 + 1)


def _dilate(mask: np.ndarray, width: int) -> np.ndarray:
    """Grows a boolean mask with a ``width x width`` square (width odd; 1 is a no-op)."""
    rows = mask.copy()
    for shift in range(1, width // 2 + 1):  # a square is separable: rows, then columns
        rows[shift:] |= mask[:-shift]
        rows[:-shift] |= mask[shift:]
    grown = rows.copy()
    for shift in range(1, width // 2 + 1):
        grown[:, shift:] |= rows[:, :-shift]
        grown[:, :-shift] |= rows[:, shift:]
    return grown


def _match_tone(rng: np.random.Generator, comic: np.ndarray, photo: np.ndarray) -> np.ndarray:
    """Gives the comic its photo's luminance mean and spread, give or take a little.

    Without this, ink and flat colours shift the global mean and standard deviation enough for
    a one-number classifier to do well; matching leaves the difference in the local structure.
    """
    lc, lp = comic @ _LUMA, np.clip(photo, 0, 1) @ _LUMA
    gain = lp.std() / max(float(lc.std()), 1e-3) * rng.uniform(0.9, 1.1)
    return (comic - lc.mean()) * np.float32(gain) + np.float32(lp.mean() + rng.uniform(-0.03, 0.03))


def _global_tone(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """A random gamma, contrast and brightness, the same for both images of a pair.

    Returns:
        A function from float pixels (clipped to [0, 1]) to the toned uint8 image.
    """
    gamma = math.exp(rng.uniform(-0.25, 0.25))
    contrast, brightness = rng.uniform(0.75, 1.25), rng.uniform(-0.1, 0.1)
    levels = np.linspace(0, 1, _TONE_LEVELS) ** gamma
    lut = _to_uint8((levels - 0.5) * contrast + 0.5 + brightness)  # a table: powers are slow

    def tone(img: np.ndarray) -> np.ndarray:
        return lut[(np.clip(img, 0, 1) * (_TONE_LEVELS - 1) + 0.5).astype(np.int16)]

    return tone


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
