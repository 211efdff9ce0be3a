"""caffe.coord_map (protonet.coord_map): coordinate maps between NetSpec tops and the Crop
layer crop() makes, checked against a built net."""
import numpy as np
import pytest

import caffe
from caffe import layers as L
from caffe import params as P
from caffe.coord_map import coord_map_from_to, crop


def conv_pool_deconv(ks=3, pad=0, pool=2, dstride=2, dpad=0, size=32):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, size, size]))
    n.conv = L.Convolution(n.data, num_output=2, kernel_size=ks, pad=pad,
                           weight_filler=dict(type="gaussian", std=1))
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=pool, stride=pool)
    n.deconv = L.Deconvolution(n.pool, convolution_param=dict(
        num_output=2, kernel_size=2 * dstride, stride=dstride, pad=dpad,
        weight_filler=dict(type="gaussian", std=1)))
    return n


def test_single_layer_maps_follow_kernel_stride_and_pad():
    n = conv_pool_deconv(ks=5, pad=1)
    # conv: scale 1, shift pad - (k-1)/2 = -1; maps data -> conv
    assert coord_map_from_to(n.data, n.conv)[1:] == (1, -1)
    ax, a, b = coord_map_from_to(n.conv, n.data)
    assert (ax, a, b) == (1, 1, 1)
    # pool 2x: conv coordinate x sits at pool coordinate x / 2 - 0.25
    ax, a, b = coord_map_from_to(n.conv, n.pool)
    assert (a, b) == (0.5, -0.25)


def test_dilation_widens_the_kernel():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 16, 16]))
    n.conv = L.Convolution(n.data, num_output=1, kernel_size=3, dilation=2)
    assert coord_map_from_to(n.conv, n.data)[2] == 2   # extent 5: (5 - 1) / 2


def test_pass_through_layers_keep_coordinates():
    n = conv_pool_deconv()
    n.relu = L.ReLU(n.deconv)
    n.bn = L.BatchNorm(n.relu)
    assert coord_map_from_to(n.bn, n.data) == coord_map_from_to(n.deconv, n.data)


def test_crop_offsets_align_the_crop_with_the_input_in_a_built_net(tmp_path):
    n = conv_pool_deconv(ks=3, pad=2, pool=2, dstride=2)   # 32 -> 34 -> 17 -> 36
    n.score = crop(n.deconv, n.data)
    param = n.to_proto().layer[-1].crop_param
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    offset = int(-b[0])
    assert param.axis == 2 and list(param.offset) == [offset] and offset > 0
    path = tmp_path / "fcn.prototxt"
    path.write_text(str(n.to_proto()))
    net = caffe.Net(str(path), caffe.TEST)
    net.blobs["data"].data[...] = np.random.default_rng(0).random((1, 1, 32, 32))
    out = net.forward()["score"]
    assert out.shape == (1, 2, 32, 32)   # axis 2 on: H and W cropped to the data's
    assert np.array_equal(out, net.blobs["deconv"].data[:, :, offset:offset + 32,
                                                        offset:offset + 32])


def test_crop_of_a_crop_adds_the_offset():
    n = conv_pool_deconv()
    _, _, b = coord_map_from_to(n.deconv, n.data)
    n.crop = L.Crop(n.deconv, n.data, axis=2, offset=3)
    assert coord_map_from_to(n.crop, n.data)[2] == b + 3


def test_anisotropic_settings_map_per_axis():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 20, 20]))
    n.conv = L.Convolution(n.data, num_output=1, kernel_size=[3, 5], stride=[1, 2],
                           pad=[0, 10])
    ax, a, b = coord_map_from_to(n.conv, n.data)
    # data -> conv: scale 1/s, shift (pad - (k-1)/2) / s; conv -> data inverts it
    assert a.tolist() == [1, 2] and b.tolist() == [1, -8]


def test_unconnected_tops_raise_runtime_error():
    n = conv_pool_deconv()
    n.ip = L.InnerProduct(n.deconv, num_output=3)
    with pytest.raises(RuntimeError, match="no chain of spatial layers"):
        coord_map_from_to(n.ip, n.data)


@pytest.mark.parametrize("settings, words", [
    (dict(pool=3, dstride=2), "different scales"),
    (dict(dpad=10), "negative offset"),
])
def test_impossible_crops_raise_assertion_error(settings, words):
    n = conv_pool_deconv(**settings)
    with pytest.raises(AssertionError, match=words):
        crop(n.deconv, n.data)
