"""The HTTP edge for people: the Portal, API tokens and the change stream it follows."""
