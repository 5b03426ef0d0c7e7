"""Tests of :mod:`statecrawl.demo`."""
