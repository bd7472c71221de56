"""The slice engine: a generator on one device at one precision, batches, tiles, out-of-memory
back-off, self-ensemble, OpenVINO, and the calibration that measures which way runs fastest here.
It sees stacks of 2D slices, never volumes or plans."""
