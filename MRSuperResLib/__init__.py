"""MRSuperResLib: 1-channel Real-ESRGAN super-resolution of MRI volumes, without Qt.

    from MRSuperResLib import read_volume, load_model, enhance_volume, write_volume
    model, card = load_model("mri-x4-fidelity")                # or a path to weights
    hr, facts = enhance_volume(read_volume("t1.nii.gz"), model, axis="auto")
    write_volume(hr, "t1_sr.nii.gz")

The names below are imported on first use, so that importing one module of the package (the
Slicer panel reading `options`, a child job) does not load torch with all the rest. No public
name is also a submodule's, so importing any submodule never hides one. The subpackages (scans,
models, engine, pipeline, training, evaluation, shipping, in_slicer, cli) are mapped in
docs/architecture.md; only `in_slicer` needs slicer (slicer-core or the application).
"""
__version__ = "0.1.0"

_HOMES = {"available_models": "models.catalog", "load_model": "models.catalog", "resolve_model": "models.catalog",
          "Cancelled": "errors", "MRSuperResError": "errors", "evaluate": "evaluation.protocol",
          "enhance_volume": "pipeline.enhance", "super_resolve_slices": "pipeline.enhance",
          "RRDBNet": "models.rrdbnet", "Volume": "scans.volumes", "read_volume": "scans.volumes",
          "write_volume": "scans.volumes", "load_generator": "models.weights", "save_model": "models.weights"}
__all__ = sorted(_HOMES)


def __getattr__(name):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module 'MRSuperResLib' has no attribute '{name}'")
