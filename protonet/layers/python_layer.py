"""Layers written in Python by the user, named by module and class (pycaffe's Python layer)."""
from __future__ import annotations

import ast
import importlib
import logging

from ..errors import NetDefinitionError
from ..registry import register_layer
from .base import Layer

log = logging.getLogger("protonet")


# Python layers people run without their module at hand, and the protonet layer that does
# their work (OpenCV's copies of these nets use the same native layers).
BUILT_IN = {("rpn.proposal_layer", "ProposalLayer"): "Proposal"}   # py-faster-rcnn
BUILT_IN_PARAM = {"Proposal": "proposal_param"}


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
    reshape_reads_only_shapes = False   # pycaffe's layers may do anything in reshape

    def setup(self, bottom, top):
        p = self.param.python_param
        try:
            module = importlib.import_module(p.module)
        except (ImportError, ValueError) as e:   # ValueError: an empty module name
            native = BUILT_IN.get((p.module, p.layer))
            if native is None:
                raise self.error(f"cannot import python_param.module '{p.module}' ({e}); put "
                                 "its folder on PYTHONPATH", NetDefinitionError) from None
            log.info("layer '%s': %s.%s is not importable; running protonet's %s layer in its "
                     "place", self.name, p.module, p.layer, native)
            self.impl = self._built_in(native, p.param_str)
            self.impl.set_up(bottom, top)
            return
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

    def _built_in(self, type_name: str, param_str: str):
        """The native layer standing in for a known Python layer, its settings read from
        param_str (a Python/YAML dict such as "'feat_stride': 16")."""
        from .. import caffe_pb2
        from ..registry import layer_class
        try:
            settings = ast.literal_eval("{" + param_str.strip().strip("{}") + "}")
        except (ValueError, SyntaxError):
            raise self.error(f"cannot read python_param.param_str {param_str!r} as a dict",
                             NetDefinitionError) from None
        lp = caffe_pb2.LayerParameter()
        lp.CopyFrom(self.param)
        lp.type = type_name
        lp.ClearField("python_param")
        message = getattr(lp, BUILT_IN_PARAM[type_name])
        for key, value in settings.items():
            if key not in message.DESCRIPTOR.fields_by_name:
                raise self.error(f"param_str sets '{key}', which {type_name} does not have",
                                 NetDefinitionError)
            setattr(message, key, value)
        return layer_class(type_name, self.name)(lp, self.phase)

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
