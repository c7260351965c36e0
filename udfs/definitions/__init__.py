"""Feature definitions: sources, entities and feature groups (see :mod:`.model`)."""
