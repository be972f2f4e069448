"""Headless Chromium (Debian's `chromium`) for tests of pages RecServe writes or serves: the DOM
after rendering, and a screenshot decoded here (PNG, no imaging library needed) to prove that
something was drawn."""

import pathlib
import shutil
import struct
import subprocess
import tempfile
import zlib


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("headless Chromium is not installed (Scripts/install-deps.sh --test installs `chromium`)")


def _run(*args, timeout=120):
    profile = tempfile.mkdtemp(prefix="recserve-chromium-")
    try:
        return subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def dom(url: str) -> str:
    """The page's DOM as Chromium serialises it once loaded. (No virtual-time budget: a page that
    reloads itself, like the status page, would never let it run out.)"""
    result = _run("--dump-dom", url)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def screenshot(url: str, out: pathlib.Path, width=1000, height=1400) -> pathlib.Path:
    result = _run("--hide-scrollbars", f"--window-size={width},{height}",
                  f"--screenshot={out}", url)
    assert result.returncode == 0 and out.exists(), result.stderr[-2000:]
    return out


def png_pixels(path: pathlib.Path):
    """(width, height, rows of RGB(A) bytes) of an 8-bit, non-interlaced PNG (what Chromium writes)."""
    data = pathlib.Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    offset = 8
    idat = b""
    width = height = channels = 0
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        offset += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and color in (2, 6), f"unsupported PNG: color {color} depth {depth}"
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, previous, at = [], bytearray(stride), 0
    for _ in range(height):
        kind, line = raw[at], bytearray(raw[at + 1:at + 1 + stride])
        at += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, channels, rows


def colours(path: pathlib.Path, step: int = 3) -> dict:
    """How many pixels (every `step`th row and column) have each colour."""
    width, height, channels, rows = png_pixels(path)
    counts = {}
    for row in rows[::step]:
        for x in range(0, width, step):
            pixel = row[x * channels:x * channels + 3]
            counts[pixel] = counts.get(pixel, 0) + 1
    return counts
