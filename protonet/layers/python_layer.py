"""Layers written in Python by the user, named by module and class (pycaffe's Python layer)."""
from __future__ import annotations

import importlib

from ..errors import NetDefinitionError
from ..registry import register_layer
from .base import Layer


@register_layer("Python")
class Python(Layer):
    """Caffe "Python" (no V1 name): python_param.module is imported (from sys.path, as pycaffe
    does with PYTHONPATH) and its class python_param.layer does the work.

    The class is written as for pycaffe: methods setup, reshape, forward(bottom, top),
    backward(top, propagate_down, bottom), reading `self.param_str` and `self.phase`, keeping
    learnable blobs in `self.blobs`. Subclassing protonet.layers.base.Layer is optional.
    Like Caffe, its tops count in the loss only with an explicit loss_weight.
    """

    num_bottom = (0, None)
    num_top = (0, None)

    def setup(self, bottom, top):
        p = self.param.python_param
        try:
            module = importlib.import_module(p.module)
        except (ImportError, ValueError) as e:   # ValueError: an empty module name
            raise self.error(f"cannot import python_param.module '{p.module}' ({e}); put its "
                             "folder on PYTHONPATH", NetDefinitionError) from None
        except SyntaxError as e:
            raise self.error(f"python_param.module '{p.module}' does not compile: {e.filename}:"
                             f"{e.lineno}: {e.msg}", NetDefinitionError) from None
        cls = getattr(module, p.layer, None) if p.layer else None
        if cls is None:
            raise self.error(f"module '{p.module}' has no class '{p.layer}'",
                             NetDefinitionError)
        if not isinstance(cls, type):
            raise self.error(f"'{p.module}.{p.layer}' is a {type(cls).__name__}, not a class; "
                             "python_param.layer names a layer class", NetDefinitionError)
        impl = cls(self.param, self.phase) if issubclass(cls, Layer) else cls()
        impl.param_str, impl.phase = p.param_str, self.phase
        impl.blobs = self.blobs
        self.impl = impl
        impl.setup(bottom, top)

    def __getattr__(self, name):
        # net.layers[i] of a Python layer answers with the user's object's attributes and
        # methods, as in pycaffe (scripts call e.g. solver.net.layers[0].set_data(...)).
        impl = self.__dict__.get("impl")
        if impl is None:
            raise AttributeError(name)
        return getattr(impl, name)

    def reshape(self, bottom, top):
        self.impl.reshape(bottom, top)

    def forward(self, bottom, top):
        self.impl.forward(bottom, top)

    def backward(self, top, propagate_down, bottom):
        self.impl.backward(top, propagate_down, bottom)
