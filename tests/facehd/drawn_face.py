"""A cartoon face drawn with Pillow, which mediapipe's detectors take for a face.

Tests use it where a photo is needed (no real photos ship with the project). ``FEATURES`` gives the
drawn positions of the features in a 512 x 512 drawing (pixels, x = col, y = row, pixel centres at
integers), scaled with the size.
"""

from __future__ import annotations

import numpy as np

# Drawn feature positions at size 512 (pixel centres).
FEATURES = {
    "right_eye": (190.0, 249.0),  # the subject's right eye, on the image left
    "left_eye": (322.0, 249.0),
    "nose_tip": (256.0, 322.0),
    "right_mouth": (208.0, 378.0),
    "left_mouth": (304.0, 378.0),
    "chin": (256.0, 470.0),
}


def draw_face(size: int = 512, seed: int = 0, background=(70, 90, 110)) -> np.ndarray:
    """(size, size, 3) uint8 RGB image of a frontal cartoon face, symmetric about the centre
    column, with mild noise from ``seed``."""
    from PIL import Image, ImageDraw, ImageFilter

    S = size / 512

    def s(*v: float) -> tuple[float, ...]:
        return tuple(x * S for x in v)

    img = Image.new("RGB", (size, size), background)
    d = ImageDraw.Draw(img)
    d.ellipse(s(96, 40, 416, 300), fill=(60, 40, 30))  # hair
    d.ellipse(s(70, 210, 110, 300), fill=(205, 150, 125))  # ears
    d.ellipse(s(402, 210, 442, 300), fill=(205, 150, 125))
    d.rectangle(s(200, 430, 312, 512), fill=(215, 165, 140))  # neck
    d.ellipse(s(106, 80, 406, 470), fill=(225, 175, 150))  # face
    for cx in (190, 322):
        d.ellipse(s(cx - 42, 228, cx + 42, 268), fill=(190, 135, 115))  # eye socket
        d.ellipse(s(cx - 30, 236, cx + 30, 262), fill=(245, 245, 240))  # sclera
        d.ellipse(s(cx - 12, 237, cx + 12, 261), fill=(80, 50, 30))  # iris
        d.ellipse(s(cx - 5, 244, cx + 5, 254), fill=(10, 10, 10))  # pupil
        d.line(s(cx - 45, 215, cx, 202, cx + 45, 212), fill=(70, 45, 30), width=max(1, int(10 * S)))
    d.polygon(s(256, 250, 236, 330, 276, 330), fill=(210, 155, 130))  # nose
    d.ellipse(s(226, 322, 286, 348), fill=(195, 140, 120))
    d.ellipse(s(236, 330, 250, 340), fill=(120, 70, 60))  # nostrils
    d.ellipse(s(262, 330, 276, 340), fill=(120, 70, 60))
    d.chord(s(206, 365, 306, 405), 0, 180, fill=(180, 80, 80))  # lower lip
    d.chord(s(206, 355, 306, 395), 180, 360, fill=(170, 70, 75))  # upper lip
    d.line(s(208, 378, 304, 378), fill=(100, 40, 40), width=max(1, int(3 * S)))
    img = img.filter(ImageFilter.GaussianBlur(3 * S))
    rng = np.random.default_rng(seed)
    a = np.asarray(img).astype(np.float32) + rng.normal(0.0, 4.0, (size, size, 3))
    return np.clip(a, 0, 255).astype(np.uint8)


def feature(name: str, size: int = 512) -> np.ndarray:
    """Drawn position of a feature in a ``size`` drawing, (2,) pixels."""
    x, y = FEATURES[name]
    k = size / 512
    return np.array([(x + 0.5) * k - 0.5, (y + 0.5) * k - 0.5])
