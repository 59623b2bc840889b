"""Numbers in words for people: sizes, counts, durations, rates. One place, used by the CLI and the
window alike."""
from __future__ import annotations


def format_bytes(n: float) -> str:
    """1536 → '1.5 KiB' (binary units, as memory and files are counted)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def format_count(n: int) -> str:
    """1_240_000_000 → '1.24 B' parameters; 4_200_000 → '4.20 M'."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.{2 if n < 10 * size else 1}f} {unit}"
    return str(n)


def format_duration(seconds: float | None) -> str:
    """3725 → '1:02:05'; 65 → '1:05'; None → '—'."""
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_rate(tokens_per_s: float | None) -> str:
    """Tokens a second: '842', '12.3 k'."""
    if tokens_per_s is None:
        return "—"
    return f"{tokens_per_s / 1000:.1f} k" if tokens_per_s >= 10_000 else f"{tokens_per_s:,.0f}"
