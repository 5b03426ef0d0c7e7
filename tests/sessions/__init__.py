"""Tests of :mod:`statecrawl.sessions`."""
