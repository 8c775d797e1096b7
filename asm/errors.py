"""The one exception the assembler raises, so callers can catch exactly it."""


class AsmError(ValueError):
    """A program, instruction or text that cannot be assembled as written."""
