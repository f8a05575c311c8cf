"""Image files, opened by PIL: only the formats vtcc reads, PIL's pixel limit an error.

Core layer: the standard library, PIL and :mod:`vtcc.io.reader` only.
"""

from __future__ import annotations

import functools
import io
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image

from vtcc.errors import ConfigError
from vtcc.io.reader import UnreadableFile, one_line, open_regular, reader

IMAGE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


# The formats of the files vtcc reads as images (.png, .jpg/.jpeg, .bmp, .webp, .tif/.tiff; a
# camera's multi-picture JPEG opens as JPEG too): PIL would otherwise open any of its forty formats
# by content, EPS among them, whose decoding runs Ghostscript on the file.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "TIFF")


@functools.cache
def _image_formats() -> tuple[str, ...]:
    """:data:`IMAGE_FORMATS` this PIL reads (all its plugins registered first)."""
    Image.init()
    return tuple(name for name in IMAGE_FORMATS if name in Image.OPEN)


@contextmanager
def _bombs_refused() -> Iterator[None]:
    """PIL's decompression-bomb warning as an error (warning filters are process-wide: changed
    only from the main thread; elsewhere :func:`open_image` checks the pixel count itself)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


@reader("image")
@contextmanager
def open_image(source: str | Path | bytes, where: Any = None) -> Iterator[Image.Image]:
    """The image in ``source`` (a path, or the bytes of an image file read from ``where``), opened
    by PIL: only a regular file; more pixels than PIL's limit (a decompression bomb), a truncated
    or malformed file and ``MemoryError`` anywhere in the ``with`` block become one line naming
    the file (:class:`UnreadableFile`, whose ``reason`` callers that skip bad images list)."""
    name = where if where is not None else source
    handle = io.BytesIO(source) if isinstance(source, bytes | bytearray) else open_regular(source)
    try:
        with _bombs_refused():
            image = Image.open(handle, formats=_image_formats())
        with image:
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and image.width * image.height > limit:
                raise Image.DecompressionBombError(
                    f"{image.width} x {image.height} pixels exceed the limit of {limit}, "
                    "could be a decompression bomb"
                )
            with _bombs_refused():
                yield image
    except ConfigError:
        raise
    except MemoryError:
        raise UnreadableFile(
            name, "cannot be read as an image (it needs more memory than there is)"
        ) from None
    except IMAGE_ERRORS as error:
        reason = one_line(str(error), 160) or type(error).__name__
        raise UnreadableFile(name, f"cannot be read as an image ({reason})") from None
    finally:
        handle.close()
