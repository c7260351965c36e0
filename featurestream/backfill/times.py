"""``--start`` / ``--end``: an ISO 8601 time (UTC unless it says otherwise) or epoch ms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from featurestream.errors import UserFacingError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time_ms(text: str, option: str) -> int:
    """``text`` as epoch milliseconds; one line naming ``option`` and the accepted forms."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UserFacingError(
            f"{option} {text!r} is neither an ISO 8601 time (2024-05-01T12:00:00Z) nor epoch "
            "milliseconds (1714564800000)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)
