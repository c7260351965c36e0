"""The event contract: the :class:`Event` record, bytes <-> events, and where schemas come from."""
