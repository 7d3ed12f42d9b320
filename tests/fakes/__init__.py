"""Local HTTP servers that answer as the networks' public APIs do, for connector tests."""
