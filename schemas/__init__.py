"""Message contracts shared by the workpools service and its clients (pydantic v2, stdlib only)."""
