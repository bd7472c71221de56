"""Helpers of the MRSuperRes module that need neither Qt nor the library (a package, so
that Slicer does not take them for modules)."""
