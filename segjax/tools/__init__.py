"""Command-line tools: summary, benchmark. Run each as `python -m segjax.tools.<name>`."""
