"""`python -m robotrain ...` is the same as the `robotrain` command (torchrun needs this form)."""

from robotrain.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
