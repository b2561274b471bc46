"""The `nemotron` command line."""
