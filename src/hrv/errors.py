"""One exception type for bad input, so that the CLI can print it without a traceback."""


class HRVInputError(ValueError):
    """Raised for bad user input: the message names the input and says what to do."""
