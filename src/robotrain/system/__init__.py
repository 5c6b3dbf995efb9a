"""What the operating system gives and takes: atomic files and locks (`files`), signals
(`signals`)."""
