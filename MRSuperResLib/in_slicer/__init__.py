"""The Slicer glue: the module logic, MRML nodes, the headless scene, the comparison layout,
child-process jobs and their worker, training jobs, and the batch entry point. Needs slicer
(slicer-core or the application) but no Qt."""
