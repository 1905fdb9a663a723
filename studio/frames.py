"""Frames as the records keep them: RGB uint8 arrays as lossless PNG (bytes in the store, base64 text
in JSON), and a PNG from outside checked before it is decoded (a small file may claim a huge image)."""

from __future__ import annotations

import base64

import numpy as np

from studio.errors import StudioError
from studio.validation import MAX_FRAME_SIDE


def frame_to_png(frame: np.ndarray | None) -> bytes | None:
    """An RGB uint8 frame as PNG bytes (lossless), or None."""
    if frame is None:
        return None
    import cv2  # imported here: only frame (de)serialisation needs OpenCV

    bgr = cv2.cvtColor(np.ascontiguousarray(frame, dtype=np.uint8), cv2.COLOR_RGB2BGR)
    ok, png = cv2.imencode(".png", bgr)
    if not ok:  # pragma: no cover - OpenCV only fails here on an invalid array
        raise ValueError("could not encode frame as PNG")
    return png.tobytes()


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_to_frame(data: bytes | None) -> np.ndarray | None:
    """Inverse of :func:`frame_to_png`. Anything but a PNG of at most ``MAX_FRAME_SIDE`` pixels a
    side is refused before it is decoded (a small file may claim a huge image)."""
    if data is None:
        return None
    import cv2

    # The size sits in the IHDR chunk right after the signature: width, height (big-endian).
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise StudioError("The frame is not a PNG image.")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not (0 < width <= MAX_FRAME_SIDE and 0 < height <= MAX_FRAME_SIDE):
        raise StudioError(f"The frame is {width}x{height} pixels; at most {MAX_FRAME_SIDE} a side are read.")
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise StudioError("The frame is not a readable PNG image.")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_frame(frame: np.ndarray | None) -> str | None:
    """An RGB uint8 frame as a base64 PNG string (the JSON form), or None."""
    png = frame_to_png(frame)
    return None if png is None else base64.b64encode(png).decode("ascii")


def decode_frame(data: str | None) -> np.ndarray | None:
    """Inverse of :func:`encode_frame`."""
    if data is None:
        return None
    try:
        png = base64.b64decode(data, validate=True)
    except (ValueError, TypeError):
        raise StudioError("The frame is not base64 text.") from None
    return png_to_frame(png)
