"""Tests of :mod:`statecrawl.frontier`."""
