"""The project's spiders: thin, parse -> items, no infrastructure."""
