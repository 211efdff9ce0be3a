"""How spatial coordinates of one NetSpec top map onto another's (pycaffe's coord_map), and
`crop(a, b)`: the Crop layer that aligns top `a` to top `b` (as FCN's skip layers need).

A map is (axis, scale, shift): output coordinate = scale * input coordinate + shift, along
the spatial axes from `axis` on (None: any axis, for pointwise layers). A convolution or
pooling of kernel k, stride s, pad p maps as (1/s, (p - (k-1)/2) / s); a deconvolution as
(s, (k-1)/2 - p); a Crop with offset o as (1, -o). Scales and shifts are numpy arrays, one
value per spatial axis (or one for all).
"""
from __future__ import annotations

import numpy as np

from .errors import NetDefinitionError
from .net_spec import layers as L

__all__ = ["coord_map_from_to", "crop", "coord_map", "compose", "inverse", "conv_params",
           "crop_params", "UndefinedMapException", "AxisMismatchException",
           "PASS_THROUGH_LAYERS"]

# Layers that keep every coordinate where it is.
PASS_THROUGH_LAYERS = ["AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU",
                       "Log", "LRN", "Exp", "MVN", "Power", "ReLU", "PReLU", "Scale",
                       "Sigmoid", "Split", "TanH", "Threshold"]

IDENTITY = (None, 1, 0)


class UndefinedMapException(NetDefinitionError):
    """The layer type has no coordinate map (InnerProduct, Reshape...)."""


class AxisMismatchException(NetDefinitionError):
    """Two maps along different first axes cannot be composed."""


class UnconnectedTopsError(NetDefinitionError, RuntimeError):
    """No chain of spatial layers joins the two tops."""


class CropError(NetDefinitionError, AssertionError):
    """The map between the two tops is not a whole, non-negative offset at scale 1."""


def conv_params(fn):
    """(axis, stride, effective kernel extent, pad) of a Convolution, Deconvolution, Im2col
    or Pooling Function; settings may sit in convolution_param or directly on the layer."""
    settings = fn.params.get("convolution_param", fn.params)
    legacy = {"pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w"} & set(settings)
    if legacy:
        raise UndefinedMapException(f"{fn.type_name}: coordinate maps need kernel_size, stride "
                                    f"and pad, not the _h/_w forms ({sorted(legacy)})")
    kernel = np.array(settings["kernel_size"], ndmin=1)
    dilation = np.array(settings.get("dilation", 1), ndmin=1)
    return (settings.get("axis", 1), np.array(settings.get("stride", 1), ndmin=1),
            (kernel - 1) * dilation + 1, np.array(settings.get("pad", 0), ndmin=1))


def crop_params(fn):
    """(axis, offset) of a Crop Function, with Caffe's defaults (axis 2, offset 0)."""
    settings = fn.params.get("crop_param", fn.params)
    return settings.get("axis", 2), np.array(settings.get("offset", 0), ndmin=1)


def coord_map(fn):
    """The (axis, scale, shift) map of one layer from its bottoms to its tops."""
    if fn.type_name in ("Convolution", "Pooling", "Im2col"):
        axis, stride, extent, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (extent - 1) / 2) / stride
    if fn.type_name == "Deconvolution":
        axis, stride, extent, pad = conv_params(fn)
        return axis, stride, (extent - 1) / 2 - pad
    if fn.type_name in PASS_THROUGH_LAYERS:
        return IDENTITY
    if fn.type_name == "Crop":
        axis, offset = crop_params(fn)
        return axis - 1, 1, -offset   # the map's axis is the last axis the crop keeps
    raise UndefinedMapException(f"{fn.type_name} layers have no coordinate map")


def compose(base, then):
    """Apply map `base`, then map `then`."""
    axis1, scale1, shift1 = base
    axis2, scale2, shift2 = then
    if axis1 is None:
        axis = axis2
    elif axis2 is None or axis1 == axis2:
        axis = axis1
    else:
        raise AxisMismatchException(f"cannot compose maps along axes {axis1} and {axis2}")
    return axis, scale1 * scale2, scale1 * shift2 + shift1


def inverse(mapping):
    """The map that undoes `mapping`."""
    axis, scale, shift = mapping
    return axis, 1 / scale, -shift / scale


def _mapped_bottoms(top):
    # A Crop's second bottom only gives the size to crop to: coordinates do not flow from it.
    bottoms = top.fn.inputs
    return bottoms[:1] if top.fn.type_name == "Crop" else bottoms


def _ancestor_maps(top, stop_at=None):
    """Maps from each ancestor of `top` to `top`, walking back while layers have maps.
    With `stop_at` (a dict of tops), returns the first top found in it and its map."""
    maps, frontier = {top: IDENTITY}, [top]
    while frontier:
        current = frontier.pop()
        if stop_at is not None and current in stop_at:
            return current, maps[current]
        try:
            step = coord_map(current.fn)
        except UndefinedMapException:
            continue
        for bottom in _mapped_bottoms(current):
            maps[bottom] = compose(maps[current], step)
            frontier.append(bottom)
    return None if stop_at is not None else maps


def coord_map_from_to(top_from, top_to):
    """(axis, scale, shift) taking coordinates of `top_from` to coordinates of `top_to`,
    through their nearest common ancestor. Raises UnconnectedTopsError (a RuntimeError) when
    no chain of spatial layers joins them."""
    from_maps = _ancestor_maps(top_from)
    found = _ancestor_maps(top_to, stop_at=from_maps)
    if found is None:
        raise UnconnectedTopsError("no chain of spatial layers joins the two tops, so their "
                                   "coordinates cannot be related")
    common, to_map = found
    return compose(to_map, inverse(from_maps[common]))


def crop(top_from, top_to):
    """A Crop layer (a Top) cropping `top_from` to the extent of `top_to`, with the axis and
    offsets worked out from their coordinate map. Raises CropError (an AssertionError) when
    the tops differ in scale or the offset is negative or fractional."""
    axis, scale, shift = coord_map_from_to(top_from, top_to)
    if not np.all(np.asarray(scale) == 1):
        raise CropError(f"cannot crop between tops at different scales (scale {scale})")
    if not np.all(np.asarray(shift) <= 0):
        raise CropError(f"cannot crop a negative offset (shift {shift}): the top to crop is "
                        "smaller than the reference")
    if not np.all(np.round(shift) == shift):
        raise CropError(f"cannot crop a fractional offset (shift {shift})")
    offsets = [int(o) for o in -np.round(np.asarray(shift, dtype=float).reshape(-1))]
    return L.Crop(top_from, top_to, crop_param=dict(axis=axis + 1, offset=offsets))
