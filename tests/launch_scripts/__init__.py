"""Scripts that tests/test_launchers.py starts under real launchers."""
