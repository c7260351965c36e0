"""Durations written the way people write them: ``500ms``, ``10s``, ``5m``, ``1h``, ``2d``."""

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str) -> int:
    """Parse ``500ms``, ``10s``, ``5m``, ``1h``, ``24h``, ``2d`` or a bare number of ms."""
    text = text.strip().lower()
    for suffix in ("ms", "s", "m", "h", "d"):
        number = text[: -len(suffix)].strip()
        if text.endswith(suffix) and number.isdigit():
            return int(number) * _UNITS[suffix]
    if text.isdigit():
        return int(text)
    raise ValueError(f"not a duration: {text!r} (use e.g. 500ms, 10s, 5m, 1h, 24h)")
