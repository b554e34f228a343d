"""Units of the config: durations ("90s", "30d"), sizes ("512M", "1G") and watermarks
("90%" or a size). Each parser raises ConfigError with the offending text; the config
loader (config.py) adds the key's name. `human_bytes` writes sizes for people."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mirror.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Watermark:
    """A share of the volume (`percent` set) or an absolute size of the store."""

    percent: float | None = None
    size: int | None = None

    @classmethod
    def parse(cls, text: str) -> "Watermark":
        t = text.strip()
        if t.endswith("%"):
            try:
                pct = float(t[:-1])
            except ValueError:
                raise ConfigError(f"invalid watermark {text!r} (use e.g. 90% or 500G)") from None
            if not 0 < pct <= 100:
                raise ConfigError(f"watermark {text!r} must be in (0, 100]%")
            return cls(percent=pct / 100)
        return cls(size=parse_size(t))



def parse_duration(text: str) -> float:
    """'90s', '5m', '1h', '30d', '2w' or a bare number of seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    t = text.strip().lower()
    if not t.isascii() or not t:
        raise ConfigError(f"invalid duration {text!r}")
    mult = units.get(t[-1])
    return _number(t[:-1] if mult else t, text, "duration", "90s, 5m, 1h, 30d") * (mult or 1)


def parse_size(text: str) -> int:
    """'10G', '512MiB', '1000000' -> bytes (binary multiples)."""
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}.get(t[-1:] or "", 1)
    return int(_number(t[:-1] if mult != 1 else t, text, "size", "500G or 80%") * mult)


def _number(num: str, text: str, what: str, examples: str) -> float:
    """The finite, non-negative number of a duration or size `text`."""
    try:
        value = float(num)
    except ValueError:
        raise ConfigError(f"invalid {what} {text!r} (use e.g. {examples})") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"invalid {what} {text!r}: must be finite and not negative")
    return value


def human_bytes(n: float) -> str:
    """1536 -> '1.50 KiB' (binary units; whole bytes below 1 KiB): what people read."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"
