"""The volume pipeline: the plan (direction, axis, factor, output grid) made once per run, in-plane
and through-plane super-resolution of a volume through the engine, the consistency step and the
maps, with exact output geometry."""
