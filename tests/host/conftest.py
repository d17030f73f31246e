"""Fixtures the image's tests and the kinds' record tests share: the rich
image (every record type), its bytes and its records."""

from __future__ import annotations

import pytest
from test_image import rich_image

from pyckpt.image import Image, Record, iter_records


@pytest.fixture(scope="module")
def image() -> Image:
    return rich_image()


@pytest.fixture(scope="module")
def data() -> bytes:
    return rich_image().to_bytes()


@pytest.fixture(scope="module")
def records(data: bytes) -> list[Record]:
    return list(iter_records(data))
