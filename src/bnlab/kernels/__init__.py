"""Floor 1: pure array functions, no state."""

__all__: list[str] = []
