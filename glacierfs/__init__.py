"""glacierfs: Amazon Glacier vaults as a filesystem."""

__version__ = "0.1.0"
