"""What both sides of the wire share: schemas, header names, error codes."""
