"""Several engine processes, each with its own event loop: the coordinator, the engine, the wire."""
