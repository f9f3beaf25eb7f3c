"""Other zero-shot synthesizers behind the same interface as CAI, for the benchmark."""
