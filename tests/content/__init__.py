"""Tests of :mod:`statecrawl.content`."""
