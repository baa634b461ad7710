"""The package version and the name servers report in rpc.info."""

__version__ = "0.2.0"

#: What rpc.info reports as `server`.
SERVER_SOFTWARE = f"at_rpc.py {__version__}"
