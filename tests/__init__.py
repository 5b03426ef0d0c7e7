"""statecrawl's tests; one subpackage per subpackage of statecrawl."""
