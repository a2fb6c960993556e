"""The OCI runtime specification: runtime configuration and (later) the runtime itself."""
