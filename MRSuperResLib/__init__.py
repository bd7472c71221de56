"""MRSuperResLib: 1-channel Real-ESRGAN super-resolution of MRI volumes, without Qt or Slicer.

    from MRSuperResLib import read_volume, load_model, enhance_volume, write_volume
    model, card = load_model("mri-x4-fidelity")                # or a path to weights
    hr, facts = enhance_volume(read_volume("t1.nii.gz"), model, axis="auto")
    write_volume(hr, "t1_sr.nii.gz")

The names below are imported on first use, so that importing one module of the package (the
Slicer panel checking its dependencies, a child job) does not load torch with all the rest.
"""
__version__ = "0.1.0"

_HOMES = {"available_models": "catalog", "load_model": "catalog", "resolve_model": "catalog",
          "Cancelled": "errors", "MRSuperResError": "errors", "evaluate": "evaluate",
          "enhance_volume": "inference", "super_resolve_slices": "inference", "RRDBNet": "rrdbnet",
          "Volume": "volumes", "read_volume": "volumes", "write_volume": "volumes",
          "load_generator": "weights", "save_model": "weights"}
__all__ = sorted(_HOMES)


def __getattr__(name):
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module 'MRSuperResLib' has no attribute '{name}'")
