"""Tests of :mod:`statecrawl.output`."""
