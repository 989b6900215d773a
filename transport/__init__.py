"""The JSON envelope on the wire, as FastStream reads and writes it (used by handlers and replica)."""
