"""Errors for bad input. Every entry point catches `InputError` and shows its message as is."""


class InputError(ValueError):
    """User input (file, request, config) is malformed; the message names file, row, column or field."""


class ReaderError(InputError):
    """A data file cannot be read; the message names the file and the row/column at fault."""


class WindowError(InputError):
    """Data is valid but cannot make the windows asked for (e.g. too little data)."""
