"""Command-line interface. Thin: parses arguments and calls library functions, no ML logic here.

Each sub-command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
``vidtempo.cli.main`` imports a module only when its command runs.
"""
