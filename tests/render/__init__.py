"""Tests of :mod:`statecrawl.render`."""
