"""Reading and writing scans: NIfTI, NRRD and DICOM volumes with their geometry, finding the scans
of a cohort (folders, globs, BIDS, DICOM series), resampling and slice profiles. Imports nothing
of the package above `errors`, `options` and `files`."""
