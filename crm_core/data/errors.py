"""Errors raised by the data layer.

Kept in their own module so that every dataset module can import them without importing the
package registry (which imports the datasets: that would be circular).
"""

from __future__ import annotations

__all__ = ["DatasetFormatError", "DatasetNotFoundError", "ImageError"]


class DatasetNotFoundError(RuntimeError):
    """A dataset's files are not on disk and downloading was not requested.

    Subclasses RuntimeError because that is what torchvision raises in the same situation, so
    callers that already catch torchvision's error keep working; the message says what to get.
    """


class ImageError(ValueError):
    """An input image cannot be used: not an image, corrupt or truncated, or too large.

    A ValueError because the *value* handed in is the problem; CLIs and the dashboard turn it
    into a user-facing message instead of a traceback.
    """


class DatasetFormatError(ValueError):
    """A dataset's file is there but is not what its format says (a mask value that is no class, an
    RGB mask where class indices were expected). A ValueError, so CLIs report it in one line."""
