"""The ``cascade`` command line."""

__all__: list[str] = []
