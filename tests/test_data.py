"""LMDB pipeline: the Data layer (transforms, wrap-around, phases, resume position, bad input),
conversions, IDX parsing and Caffe byte compatibility."""
import gzip
from pathlib import Path

import lmdb
import numpy as np
import pytest

import protonet
from protonet import caffe_pb2, prototxt
from protonet.blob import Blob
from protonet.data.convert import compute_mean, convert_dataset, convert_idx, convert_imageset
from protonet.errors import DataError
from protonet.io.binaryproto import write_binaryproto
from protonet.io.datum import datum_from_array
from protonet.io.idx import read_idx, write_idx
from protonet.io.lmdb_store import write_lmdb
from protonet.testing import layer_from_text

FASHION = Path("/usr/share/datasets/fashion-mnist")


def make_lmdb(path, n=10, shape=(1, 4, 5), seed=0):
    g = np.random.default_rng(seed)
    images = g.integers(0, 256, (n, *shape), dtype=np.uint8)
    labels = np.arange(n) % 7
    write_lmdb(path, ((b"%08d" % i, datum_from_array(images[i], labels[i])) for i in range(n)))
    return images, labels


def data_layer(source, extra="", transform="", phase=protonet.TRAIN, batch=4, tops=2):
    text = (f'name: "d" type: "Data" data_param {{ source: "{source}" batch_size: {batch} '
            f'backend: LMDB {extra} }} transform_param {{ {transform} }}')
    layer = layer_from_text(text, phase)
    top = [Blob(name="data"), Blob(name="label")][:tops]
    layer.set_up([], top)
    return layer, top


def test_data_layer_reads_in_key_order_and_wraps(tmp_path):
    images, labels = make_lmdb(tmp_path / "db", n=10)
    layer, top = data_layer(tmp_path / "db", transform="scale: 0.5")
    assert top[0].shape == (4, 1, 4, 5) and top[1].shape == (4,)
    seen, data = [], []
    for _ in range(3):
        layer.forward([], top)
        seen.append(top[1].data.copy())
        data.append(top[0].data.copy())
    order = [i % 10 for i in range(12)]
    np.testing.assert_array_equal(np.concatenate(seen), labels[order])
    np.testing.assert_allclose(np.concatenate(data), 0.5 * images[order].astype(np.float32))
    layer.close()


def test_data_layer_values_mean_value_and_scale(tmp_path):
    images, _ = make_lmdb(tmp_path / "db", n=6)
    layer, top = data_layer(tmp_path / "db", transform="scale: 0.1 mean_value: 100")
    layer.forward([], top)
    np.testing.assert_allclose(top[0].data, (images[:4].astype(np.float32) - 100) * 0.1,
                               rtol=1e-6)
    layer.close()


def test_mean_file_is_subtracted_and_its_shape_checked(tmp_path):
    images, _ = make_lmdb(tmp_path / "db", n=6)
    mean = compute_mean(tmp_path / "db", tmp_path / "mean.binaryproto")
    np.testing.assert_allclose(mean[0], images.mean(axis=0), rtol=1e-5)
    layer, top = data_layer(tmp_path / "db", transform=f'mean_file: "{tmp_path}/mean.binaryproto"')
    layer.forward([], top)
    np.testing.assert_allclose(top[0].data, images[:4] - mean[0], rtol=1e-5, atol=1e-4)
    layer.close()
    write_binaryproto(tmp_path / "bad.binaryproto", np.zeros((1, 1, 3, 3), np.float32))
    with pytest.raises(DataError, match=r"shape \(1, 1, 3, 3\).*data has shape \(1, 4, 5\)"):
        data_layer(tmp_path / "db", transform=f'mean_file: "{tmp_path}/bad.binaryproto"')


def test_crop_is_centred_in_test_and_random_but_repeatable_in_train(tmp_path):
    images, _ = make_lmdb(tmp_path / "db", n=8, shape=(2, 6, 6))
    test_layer, top = data_layer(tmp_path / "db", transform="crop_size: 4", phase=protonet.TEST)
    test_layer.forward([], top)
    np.testing.assert_array_equal(top[0].data, images[:4, :, 1:5, 1:5])
    test_layer.close()
    protonet.set_random_seed(3)
    train, top = data_layer(tmp_path / "db", transform="crop_size: 4 mirror: true")
    train.forward([], top)
    first = top[0].data.copy()
    for i in range(4):  # each output is some 4x4 window of its image, maybe mirrored
        windows = [images[i][:, y:y + 4, x:x + 4] for y in range(3) for x in range(3)]
        windows += [w[:, :, ::-1] for w in windows]
        assert any(np.array_equal(first[i], w) for w in windows)
    train.seek(0)
    train.forward([], top)
    np.testing.assert_array_equal(top[0].data, first)  # same position -> same draws
    train.close()


def test_mirror_is_off_in_test(tmp_path):
    images, _ = make_lmdb(tmp_path / "db", n=4)
    layer, top = data_layer(tmp_path / "db", transform="mirror: true", phase=protonet.TEST)
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data, images)
    layer.close()


def test_reader_position_and_seek_resume_exactly(tmp_path):
    _, labels = make_lmdb(tmp_path / "db", n=9)
    layer, top = data_layer(tmp_path / "db", batch=4)
    layer.forward([], top)
    layer.forward([], top)
    assert layer.reader_position() == 8
    layer.forward([], top)
    expected = top[1].data.copy()
    other, top2 = data_layer(tmp_path / "db", batch=4)
    other.seek(8)
    other.forward([], top2)
    np.testing.assert_array_equal(top2[1].data, expected)
    np.testing.assert_array_equal(expected, labels[[8, 0, 1, 2]])
    layer.close()
    other.close()


def test_rand_skip_starts_inside_the_database(tmp_path):
    make_lmdb(tmp_path / "db", n=20)
    protonet.set_random_seed(1)
    layer, _ = data_layer(tmp_path / "db", extra="rand_skip: 15")
    assert 0 <= layer.reader_position() < 15
    layer.close()


def test_single_top_gives_data_only(tmp_path):
    make_lmdb(tmp_path / "db", n=4)
    layer, top = data_layer(tmp_path / "db", tops=1)
    layer.forward([], top)
    assert top[0].shape == (4, 1, 4, 5)
    layer.close()


def test_bad_sources_are_named(tmp_path):
    with pytest.raises(DataError, match=r"layer 'd' \(Data\): LMDB source .*nope' does not "
                                        r"exist"):
        data_layer(tmp_path / "nope")
    with pytest.raises(DataError, match="backend LEVELDB is not supported"):
        layer_from_text(f'type: "Data" data_param {{ source: "{tmp_path}" batch_size: 1 '
                        'backend: LEVELDB }').set_up([], [Blob()])
    write_lmdb(tmp_path / "empty", [])
    with pytest.raises(DataError, match="empty"):
        data_layer(tmp_path / "empty")


def test_bad_records_are_named_by_key(tmp_path):
    write_lmdb(tmp_path / "db", [(b"00000000", datum_from_array(np.zeros((1, 2, 2)), 1)),
                                 (b"00000001", datum_from_array(np.zeros((1, 3, 2)), 1)),
                                 (b"00000002", b"\xff\xff garbage")] * 1)
    layer, top = data_layer(tmp_path / "db", batch=2)
    with pytest.raises(DataError, match=r"record 00000001: shape \(1, 3, 2\) differs"):
        layer.forward([], top)
    layer.close()
    write_lmdb(tmp_path / "db2", [(b"00000000", datum_from_array(np.zeros((1, 2, 2)), 1)),
                                  (b"00000001", b"\xff\xff garbage")])
    layer, top = data_layer(tmp_path / "db2", batch=2)
    with pytest.raises(DataError, match="record 00000001: not a Datum"):
        layer.forward([], top)
    layer.close()


def test_idx_round_trip_and_errors(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a-idx3-ubyte", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte"), array)
    (tmp_path / "a.gz").write_bytes(gzip.compress((tmp_path / "a-idx3-ubyte").read_bytes()))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), array)
    raw = (tmp_path / "a-idx3-ubyte").read_bytes()
    (tmp_path / "short").write_bytes(raw[:-5])
    with pytest.raises(DataError, match=r"short: header says \(2, 3, 4\).*truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "magic").write_bytes(b"\x12\x34" + raw[2:])
    with pytest.raises(DataError, match="magic: not an IDX file .*1234"):
        read_idx(tmp_path / "magic")
    with pytest.raises(DataError, match="3 dimensions, expected 1"):
        read_idx(tmp_path / "a-idx3-ubyte", expect_ndim=1)


def test_mnist_conversion_matches_caffe_records_and_feeds_a_net(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    g = np.random.default_rng(0)
    for split, n in (("train", 12), ("t10k", 5)):
        write_idx(src / f"{split}-images-idx3-ubyte", g.integers(0, 256, (n, 28, 28)))
        write_idx(src / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)
    out = convert_dataset("mnist", tmp_path / "out", src)
    env = lmdb.open(str(out["train"]), readonly=True, lock=False)
    with env.begin() as txn:
        keys = [k for k, _ in txn.cursor()]
        value = txn.get(b"00000003")
    env.close()
    assert keys[0] == b"00000000" and keys[-1] == b"00000011" and len(keys) == 12
    datum = caffe_pb2.Datum.FromString(value)
    assert (datum.channels, datum.height, datum.width, datum.label) == (1, 28, 28, 3)
    assert not datum.HasField("encoded") and len(datum.data) == 784
    # Caffe's C++ serializer writes fields in number order, the label even when 0.
    zero = caffe_pb2.Datum.FromString(datum_from_array(np.zeros((1, 1, 1)), 0))
    assert zero.HasField("label") and datum_from_array(np.zeros((1, 1, 1)), 0).startswith(b"\x08")
    net = protonet.Net(param=prototxt.parse_net_text(
        f'layer {{ name: "d" type: "Data" top: "data" top: "label" data_param {{ source: '
        f'"{out["train"]}" batch_size: 4 backend: LMDB }} }}'), phase=protonet.TRAIN)
    net.forward()
    assert net.blobs["data"].shape == (4, 1, 28, 28)
    net.close()


def test_conversion_is_atomic_and_offline_download_says_so(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_idx(src / "train-images-idx3-ubyte", np.zeros((3, 28, 28)))
    write_idx(src / "train-labels-idx1-ubyte", np.zeros(4))
    with pytest.raises(DataError, match="3 images but .* 4 labels"):
        convert_idx(src / "train-images-idx3-ubyte", src / "train-labels-idx1-ubyte",
                    tmp_path / "out_lmdb")
    assert not (tmp_path / "out_lmdb").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out_lmdb")]
    with pytest.raises(DataError, match="cannot download mnist .*--from DIR"):
        convert_dataset("mnist", tmp_path / "o", url="http://127.0.0.1:9/")


def test_imageset_conversion_skips_unreadable_images(tmp_path):
    from PIL import Image
    (tmp_path / "img").mkdir()
    Image.fromarray(np.full((5, 4, 3), (10, 20, 30), np.uint8)).save(tmp_path / "img/a.png")
    (tmp_path / "img/b.png").write_bytes(b"not an image")
    (tmp_path / "list.txt").write_text("a.png 3\nb.png 1\n")
    n, skipped = convert_imageset(tmp_path / "list.txt", tmp_path / "img", tmp_path / "db")
    assert n == 1 and skipped == [str(tmp_path / "img/b.png")]
    layer, top = data_layer(tmp_path / "db", batch=1)
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data[0, :, 0, 0], [30, 20, 10])  # BGR, as Caffe
    assert top[1].data[0] == 3
    layer.close()
    n, _ = convert_imageset(tmp_path / "list.txt", tmp_path / "img", tmp_path / "enc",
                            encoded=True)
    layer, top = data_layer(tmp_path / "enc", batch=1)
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data[0, :, 0, 0], [30, 20, 10])
    layer.close()


def test_reader_memory_stays_flat_over_epochs(tmp_path):
    import resource
    make_lmdb(tmp_path / "db", n=2000, shape=(1, 28, 28))
    layer, top = data_layer(tmp_path / "db", batch=64)
    for _ in range(40):
        layer.forward([], top)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(200):  # ~6 epochs
        layer.forward([], top)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    layer.close()
    assert after - before < 20_000  # KiB: the database (1.6 MB) is streamed, not loaded


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_real_fashion_mnist_converts(tmp_path):
    out = convert_dataset("fashion-mnist", tmp_path)
    env = lmdb.open(str(out["test"]), readonly=True, lock=False)
    assert env.stat()["entries"] == 10000
    env.close()


def image_list(tmp_path, n=5, size=(6, 4)):
    from PIL import Image
    (tmp_path / "img").mkdir()
    lines = []
    for i in range(n):
        Image.fromarray(np.full((*size, 3), (i, 2 * i, 3 * i), np.uint8)).save(
            tmp_path / f"img/{i}.png")
        lines.append(f"{i}.png {10 + i}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "list.txt"


def image_data_layer(tmp_path, extra="", phase=protonet.TRAIN):
    text = (f'name: "img" type: "ImageData" image_data_param {{ source: "{tmp_path}/list.txt" '
            f'root_folder: "{tmp_path}/img/" batch_size: 3 {extra} }}')
    layer = layer_from_text(text, phase)
    top = [Blob(name="data"), Blob(name="label")]
    layer.set_up([], top)
    return layer, top


def test_image_data_reads_the_list_in_order_bgr_and_wraps(tmp_path):
    image_list(tmp_path)
    layer, top = image_data_layer(tmp_path)
    assert top[0].shape == (3, 3, 6, 4)
    seen = []
    for _ in range(3):
        layer.forward([], top)
        seen += list(top[1].data)
        np.testing.assert_array_equal(top[0].data[:, :, 0, 0],
                                      [[3 * (l - 10), 2 * (l - 10), l - 10] for l in top[1].data])
    layer.close()
    assert seen == [10, 11, 12, 13, 14, 10, 11, 12, 13]


def test_image_data_resizes_and_shuffles_every_epoch_resumably(tmp_path):
    image_list(tmp_path, n=6)
    extra = "shuffle: true new_height: 3 new_width: 5 is_color: false"
    layer, top = image_data_layer(tmp_path, extra)
    assert top[0].shape == (3, 1, 3, 5)
    labels = []
    for _ in range(4):
        layer.forward([], top)
        labels.append(list(top[1].data))
    epochs = [sorted(labels[0] + labels[1]), sorted(labels[2] + labels[3])]
    assert epochs == [list(range(10, 16))] * 2 and labels[:2] != [[10, 11, 12], [13, 14, 15]]
    layer.seek(6)   # a resumed run continues with the same second-epoch order
    layer.forward([], top)
    assert list(top[1].data) == labels[2]
    layer.close()


def test_image_data_bad_inputs_name_the_layer_and_file(tmp_path):
    image_list(tmp_path, n=2)
    (tmp_path / "list.txt").write_text("0.png 10\nmissing.png 1\n")
    layer, top = image_data_layer(tmp_path)
    with pytest.raises(DataError, match=r"'img' \(ImageData\): cannot read image .*missing.png"):
        layer.forward([], top)
    layer.close()
    from PIL import Image
    Image.fromarray(np.zeros((7, 7, 3), np.uint8)).save(tmp_path / "img/big.png")
    (tmp_path / "list.txt").write_text("0.png 10\nbig.png 1\n")
    layer, top = image_data_layer(tmp_path)
    with pytest.raises(DataError, match="big.png has shape .*new_height and new_width"):
        layer.forward([], top)
    layer.close()
    with pytest.raises(DataError, match="cannot read image list"):
        image_data_layer(tmp_path / "nowhere")


def write_h5(path, data, label):
    import h5py
    with h5py.File(path, "w") as f:
        f["data"] = data
        f["label"] = label


def hdf5_layer(tmp_path, files, extra="", batch=4):
    (tmp_path / "list.txt").write_text("".join(f"{tmp_path / name}\n" for name in files))
    layer = layer_from_text(f'name: "h5" type: "HDF5Data" top: "data" top: "label" '
                            f'hdf5_data_param {{ source: "{tmp_path}/list.txt" '
                            f'batch_size: {batch} {extra} }}', protonet.TRAIN)
    top = [Blob(name="data"), Blob(name="label")]
    layer.set_up([], top)
    return layer, top


def test_hdf5_data_reads_files_in_order_across_file_ends_and_wraps(tmp_path):
    write_h5(tmp_path / "a.h5", np.arange(12, dtype=np.float64).reshape(3, 2, 2), [0, 1, 2])
    write_h5(tmp_path / "b.h5", 100 + np.arange(20).reshape(5, 2, 2), [3, 4, 5, 6, 7])
    layer, top = hdf5_layer(tmp_path, ["a.h5", "b.h5"])
    assert top[0].shape == (4, 2, 2) and top[1].shape == (4,)
    labels = []
    for _ in range(3):
        layer.forward([], top)
        labels += list(top[1].data)
    assert labels == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3]
    assert top[0].data.dtype == np.float32 and top[0].data[3, 0, 0] == 100


def test_hdf5_data_shuffles_each_epoch_and_resumes_exactly(tmp_path):
    write_h5(tmp_path / "a.h5", np.zeros((4, 1)), [0, 1, 2, 3])
    write_h5(tmp_path / "b.h5", np.zeros((4, 1)), [4, 5, 6, 7])
    protonet.set_random_seed(7)
    layer, top = hdf5_layer(tmp_path, ["a.h5", "b.h5"], "shuffle: true")
    epochs = []
    for _ in range(4):
        layer.forward([], top)
        epochs.append(list(top[1].data))
    assert sorted(epochs[0] + epochs[1]) == list(range(8)) == sorted(epochs[2] + epochs[3])
    assert epochs[0] + epochs[1] != list(range(8))
    layer.seek(8)
    layer.forward([], top)
    assert list(top[1].data) == epochs[2]


def test_hdf5_data_bad_files_are_named(tmp_path):
    write_h5(tmp_path / "a.h5", np.zeros((4, 1)), [0, 1, 2])
    with pytest.raises(DataError, match=r"a.h5 have different numbers of rows \[3, 4\]"):
        hdf5_layer(tmp_path, ["a.h5"])
    import h5py
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["features"] = np.zeros((2, 1))
    with pytest.raises(DataError, match=r"c.h5 has no dataset 'data' \(it has features\)"):
        hdf5_layer(tmp_path, ["c.h5"])
    with pytest.raises(DataError, match="cannot read the file list"):
        layer_from_text('name: "h" type: "HDF5Data" top: "data" hdf5_data_param { '
                        f'source: "{tmp_path}/none.txt" batch_size: 2 }}',
                        protonet.TRAIN).set_up([], [Blob()])


def test_caffe_hdf5_classification_example_trains_on_hdf5_files(caffe_models, tmp_path,
                                                                 monkeypatch):
    """Caffe's examples/hdf5_classification nets with real HDF5 files in place of theirs."""
    g = np.random.default_rng(0)
    folder = tmp_path / "examples/hdf5_classification/data"
    folder.mkdir(parents=True)
    for name in ("train", "test"):
        x = g.standard_normal((50, 4)).astype(np.float32)
        write_h5(folder / f"{name}.h5", x, (x[:, 0] + x[:, 1] > 0).astype(np.float32))
        (folder / f"{name}.txt").write_text(f"examples/hdf5_classification/data/{name}.h5\n")
    monkeypatch.chdir(tmp_path)
    net = protonet.Net(str(caffe_models / "examples/hdf5_classification/nonlinear_train_val.prototxt"),
                       protonet.TRAIN)
    first = net.forward_backward()
    for _ in range(60):
        net.clear_param_diffs()
        net.forward_backward()
        for blob in net.learnable_params:
            blob.data -= 0.1 * blob.diff
    assert net.forward_backward() < first
