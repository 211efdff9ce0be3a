"""caffe.io (protonet.preprocessing): pycaffe's array / proto conversions, image loading,
resizing, ten-crop oversampling and the Transformer."""
import numpy as np
import pytest
from PIL import Image

import caffe
from caffe.proto import caffe_pb2


# -- BlobProto ---------------------------------------------------------------------------------
def test_blobproto_to_array_reads_the_legacy_4d_shape():
    blob = caffe_pb2.BlobProto(num=1, channels=2, height=3, width=1)
    blob.data.extend(range(6))
    arr = caffe.io.blobproto_to_array(blob)
    assert arr.shape == (1, 2, 3, 1)
    assert arr[0, 1, 2, 0] == 5


def test_blobproto_to_array_reads_shape_dims_and_the_diff():
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([2, 3])
    blob.data.extend(np.arange(6.0))
    blob.diff.extend(-np.arange(6.0))
    assert caffe.io.blobproto_to_array(blob).tolist() == [[0, 1, 2], [3, 4, 5]]
    assert caffe.io.blobproto_to_array(blob, return_diff=True)[1, 2] == -5


def test_blobproto_without_shape_is_a_scalar_and_more_values_raise_value_error():
    one = caffe_pb2.BlobProto(data=[123.0])
    scalar = caffe.io.blobproto_to_array(one)
    assert scalar.shape == () and scalar == 123
    many = caffe_pb2.BlobProto(data=[0.0] * 100)
    with pytest.raises(ValueError, match="100 data values"):
        caffe.io.blobproto_to_array(many)


def test_array_to_blobproto_round_trips_shape_data_and_diff():
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    blob = caffe.io.array_to_blobproto(arr, diff=arr * 2)
    assert list(blob.shape.dim) == [2, 3, 4] and not blob.HasField("num")
    assert np.array_equal(caffe.io.blobproto_to_array(blob), arr)
    assert np.array_equal(caffe.io.blobproto_to_array(blob, return_diff=True), arr * 2)


def test_blobprotovector_strings_round_trip_a_list_of_arrays():
    arrays = [np.ones((2, 2)), np.arange(3.0)]
    text = caffe.io.arraylist_to_blobprotovector_str(arrays)
    assert isinstance(text, bytes)
    back = caffe.io.blobprotovector_str_to_arraylist(text)
    assert [a.shape for a in back] == [(2, 2), (3,)]
    assert all(np.array_equal(a, b) for a, b in zip(arrays, back))


# -- Datum -------------------------------------------------------------------------------------
def test_array_to_datum_keeps_uint8_as_bytes_and_other_types_as_floats():
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 2, 2)
    datum = caffe.io.array_to_datum(pixels, label=7)
    assert (datum.channels, datum.height, datum.width, datum.label) == (3, 2, 2, 7)
    assert datum.data == pixels.tobytes() and not len(datum.float_data)
    floats = caffe.io.array_to_datum(pixels.astype(np.float64) / 2)
    assert not floats.data and list(floats.float_data)[:3] == [0, 0.5, 1]


def test_array_to_datum_leaves_the_label_unset_unless_given():
    d1 = caffe.io.array_to_datum(np.ones((1, 2, 2)), label=1)
    d2 = caffe.io.array_to_datum(np.ones((1, 2, 2)))
    assert d1.HasField("label") and not d2.HasField("label")
    assert len(d2.SerializeToString()) < len(d1.SerializeToString())


def test_array_to_datum_needs_three_axes():
    with pytest.raises(ValueError, match="channels, height, width"):
        caffe.io.array_to_datum(np.ones((2, 2)))


def test_datum_to_array_inverts_array_to_datum():
    pixels = np.random.default_rng(0).integers(0, 255, (3, 4, 5), dtype=np.uint8)
    back = caffe.io.datum_to_array(caffe.io.array_to_datum(pixels))
    assert back.dtype == np.uint8 and np.array_equal(back, pixels)
    values = np.linspace(-1, 1, 12).reshape(1, 3, 4)
    back = caffe.io.datum_to_array(caffe.io.array_to_datum(values))
    assert back.shape == (1, 3, 4) and np.allclose(back, values, atol=1e-7)


# -- images ------------------------------------------------------------------------------------
@pytest.fixture
def rgb_file(tmp_path):
    pixels = np.zeros((4, 6, 3), np.uint8)
    pixels[..., 0] = 255          # red
    pixels[1, 2] = (0, 51, 102)
    path = tmp_path / "rgb.png"
    Image.fromarray(pixels).save(path)
    return path


def test_load_image_gives_h_w_3_float_rgb_in_0_1(rgb_file):
    image = caffe.io.load_image(str(rgb_file))
    assert image.shape == (4, 6, 3) and image.dtype == np.float32
    assert image[0, 0].tolist() == [1, 0, 0]
    assert np.allclose(image[1, 2], [0, 0.2, 0.4])


def test_load_image_grey_and_alpha(tmp_path):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((3, 2), 128, np.uint8)).save(grey)
    as_colour = caffe.io.load_image(str(grey))
    assert as_colour.shape == (3, 2, 3) and np.allclose(as_colour, 128 / 255)
    assert caffe.io.load_image(str(grey), color=False).shape == (3, 2, 1)
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.full((2, 2, 4), 255, np.uint8)).save(rgba)
    assert caffe.io.load_image(str(rgba)).shape == (2, 2, 3)


def test_load_image_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(protonet_error(), match="nope.png"):
        caffe.io.load_image(str(tmp_path / "nope.png"))


def protonet_error():
    import protonet
    return protonet.ProtonetError


def test_resize_image_bilinear_with_pixel_centres():
    im = np.array([[0.0, 1.0]], np.float32)[:, :, None]          # 1 x 2 x 1
    out = caffe.io.resize_image(im, (1, 4))
    # output pixel centres at 0.25, 0.75, 1.25, 1.75 input pixels -> x - 0.5, clamped
    assert out.shape == (1, 4, 1) and out.dtype == np.float32
    assert np.allclose(out[0, :, 0], [0, 0.25, 0.75, 1])


def test_resize_image_keeps_channels_same_size_and_constant_images():
    im = np.random.default_rng(1).random((5, 7, 4)).astype(np.float32)
    assert np.allclose(caffe.io.resize_image(im, (5, 7)), im)
    assert caffe.io.resize_image(im, (10, 3)).shape == (10, 3, 4)
    flat = np.full((3, 3, 3), 0.7, np.float32)
    assert np.array_equal(caffe.io.resize_image(flat, (8, 2)), np.full((8, 2, 3), 0.7,
                                                                      np.float32))


def test_resize_image_nearest():
    im = np.arange(4, dtype=np.float32).reshape(2, 2, 1)
    out = caffe.io.resize_image(im, (4, 4), interp_order=0)
    assert out[:, :, 0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]


def test_oversample_gives_corners_centre_and_their_mirrors():
    im = np.arange(5 * 6, dtype=np.float32).reshape(5, 6, 1)
    crops = caffe.io.oversample([im, im + 100], (3, 4))
    assert crops.shape == (20, 3, 4, 1)
    expected = [im[:3, :4], im[:3, 2:], im[2:, :4], im[2:, 2:], im[1:4, 1:5]]
    for j, window in enumerate(expected):
        assert np.array_equal(crops[j], window)
        assert np.array_equal(crops[5 + j], window[:, ::-1])
        assert np.array_equal(crops[10 + j], window + 100)


# -- Transformer -------------------------------------------------------------------------------
def imagenet_transformer(shape=(1, 3, 4, 5)):
    t = caffe.io.Transformer({"data": shape})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", np.array([104.0, 117.0, 123.0]))
    t.set_input_scale("data", 0.5)
    return t


def test_preprocess_applies_the_steps_in_pycaffes_order():
    image = np.random.default_rng(2).random((4, 5, 3)).astype(np.float32)
    out = imagenet_transformer().preprocess("data", image)
    expected = (image.transpose(2, 0, 1)[::-1] * 255 - np.array([104, 117, 123])[:, None, None]
                ) * 0.5
    assert out.shape == (3, 4, 5) and out.dtype == np.float32
    assert np.allclose(out, expected, atol=1e-4)


def test_preprocess_resizes_to_the_input_size_and_leaves_the_image_alone():
    image = np.random.default_rng(3).random((8, 10, 3)).astype(np.float32)
    keep = image.copy()
    out = imagenet_transformer().preprocess("data", image)
    assert out.shape == (3, 4, 5)
    assert np.array_equal(image, keep)


def test_deprocess_inverts_preprocess():
    t = imagenet_transformer()
    image = np.random.default_rng(4).random((4, 5, 3)).astype(np.float32)
    back = t.deprocess("data", t.preprocess("data", image)[None])
    assert back.shape == (4, 5, 3) and np.allclose(back, image, atol=1e-5)


def test_set_mean_accepts_per_pixel_means_and_resizes_them():
    t = caffe.io.Transformer({"data": (1, 3, 4, 4)})
    t.set_mean("data", np.ones((3, 8, 8)))
    assert t.mean["data"].shape == (3, 4, 4) and np.allclose(t.mean["data"], 1)
    t.set_mean("data", np.zeros((4, 4)))
    assert t.mean["data"].shape == (1, 4, 4)


@pytest.mark.parametrize("call, args, words", [
    ("set_mean", (np.ones(2),), "2 channels"),
    ("set_mean", (np.ones((1, 1, 1, 1)),), "mean shape"),
    ("set_channel_swap", ((1, 0),), "3 channels"),
    ("set_transpose", ((1, 0),), "3 axes"),
])
def test_settings_that_do_not_fit_the_input_raise_value_error(call, args, words):
    t = caffe.io.Transformer({"data": (1, 3, 4, 4)})
    with pytest.raises(ValueError, match=words):
        getattr(t, call)("data", *args)


def test_an_unknown_input_is_named():
    t = caffe.io.Transformer({"data": (1, 3, 4, 4)})
    with pytest.raises(protonet_error(), match="'label' is not one of the net inputs"):
        t.set_raw_scale("label", 255)
