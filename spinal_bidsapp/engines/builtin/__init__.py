"""Builtin engine: our own implementations on numpy/scipy/nibabel/antspyx."""
