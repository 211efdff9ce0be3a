"""Layer families. Importing this package imports every family module, which registers its
layers; registration happens here and nowhere else."""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
