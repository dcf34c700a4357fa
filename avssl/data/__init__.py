"""Data tools on the command line: ``python -m avssl.data stats SOURCE`` (see `__main__`)."""
