"""Scripts run by ``torchrun`` (one copy per rank); each writes its results into a directory per rank."""
