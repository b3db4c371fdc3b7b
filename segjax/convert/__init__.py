"""PyTorch checkpoint -> segjax checkpoint converters; see __main__ for the command line."""
