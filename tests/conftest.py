"""Fixtures shared by the test folders."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def no_heif_decoder(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pillow as installed without pillow-heif: no HEIC/HEIF decoder registered, none to add."""
    from PIL import Image

    from facehd import align

    registered = Image.registered_extensions

    def without_heif() -> dict[str, str]:
        return {k: v for k, v in registered().items() if k not in (".heic", ".heif")}

    monkeypatch.setattr(Image, "registered_extensions", without_heif)
    monkeypatch.setattr(align, "register_photo_decoders", lambda: ())
    yield
