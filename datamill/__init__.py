"""datamill: generated contract package."""
