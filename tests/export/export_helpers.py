"""Constants shared by the export tests (conftest.py cannot be imported by name reliably)."""

# Small input: these tests are about mechanics and parity, not accuracy at full size.
SIZE = (64, 32)
