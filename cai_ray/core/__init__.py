"""Pure algorithms over numpy arrays: no Ray, no storage, no file formats."""
