"""The nets Caffe's Python examples build with net_spec, written out as those scripts build
them (examples/pycaffe/caffenet.py, the 01-learning-lenet and 02-fine-tuning notebooks, the
coord_map crop of an FCN-style skip), each as a function of the `caffe` module to use.
`build_all(caffe)` returns {name: NetParameter}; tests compare their text with what pycaffe
prints for the same scripts (tests/fixtures/pycaffe/<name>.prototxt).
"""


def caffenet_example(caffe, lmdb, batch_size=256, include_acc=False):
    """examples/pycaffe/caffenet.py: anonymous tops, to_proto(loss[, acc])."""
    L, P = caffe.layers, caffe.params

    def conv_relu(bottom, ks, nout, stride=1, pad=0, group=1):
        conv = L.Convolution(bottom, kernel_size=ks, stride=stride, num_output=nout, pad=pad,
                             group=group)
        return conv, L.ReLU(conv, in_place=True)

    def fc_relu(bottom, nout):
        fc = L.InnerProduct(bottom, num_output=nout)
        return fc, L.ReLU(fc, in_place=True)

    def max_pool(bottom, ks, stride=1):
        return L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=ks, stride=stride)

    data, label = L.Data(source=lmdb, backend=P.Data.LMDB, batch_size=batch_size, ntop=2,
                         transform_param=dict(crop_size=227, mean_value=[104, 117, 123],
                                              mirror=True))
    conv1, relu1 = conv_relu(data, 11, 96, stride=4)
    pool1 = max_pool(relu1, 3, stride=2)
    norm1 = L.LRN(pool1, local_size=5, alpha=1e-4, beta=0.75)
    conv2, relu2 = conv_relu(norm1, 5, 256, pad=2, group=2)
    pool2 = max_pool(relu2, 3, stride=2)
    norm2 = L.LRN(pool2, local_size=5, alpha=1e-4, beta=0.75)
    conv3, relu3 = conv_relu(norm2, 3, 384, pad=1)
    conv4, relu4 = conv_relu(relu3, 3, 384, pad=1, group=2)
    conv5, relu5 = conv_relu(relu4, 3, 256, pad=1, group=2)
    pool5 = max_pool(relu5, 3, stride=2)
    fc6, relu6 = fc_relu(pool5, 4096)
    drop6 = L.Dropout(relu6, in_place=True)
    fc7, relu7 = fc_relu(drop6, 4096)
    drop7 = L.Dropout(relu7, in_place=True)
    fc8 = L.InnerProduct(drop7, num_output=1000)
    loss = L.SoftmaxWithLoss(fc8, label)
    if include_acc:
        return caffe.to_proto(loss, L.Accuracy(fc8, label))
    return caffe.to_proto(loss)


def lenet_notebook(caffe, lmdb, batch_size):
    """01-learning-lenet's lenet(): named tops through a NetSpec."""
    L, P = caffe.layers, caffe.params
    n = caffe.NetSpec()
    n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source=lmdb,
                             transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20,
                            weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50,
                            weight_filler=dict(type="xavier"))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


def custom_notebook(caffe, lmdb, batch_size):
    """01-learning-lenet's custom_net(): a linear classifier."""
    L, P = caffe.layers, caffe.params
    n = caffe.NetSpec()
    n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source=lmdb,
                             transform_param=dict(scale=1. / 255), ntop=2)
    n.score = L.InnerProduct(n.data, num_output=10, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


def caffenet_finetune(caffe, data, label=None, train=True, num_classes=1000,
                      classifier_name="fc8", learn_all=False):
    """02-fine-tuning's caffenet(): param lists, fillers, frozen layers, a renamed
    classifier set with __setattr__."""
    L, P = caffe.layers, caffe.params
    learned = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
    frozen = [dict(lr_mult=0)] * 2

    def conv_relu(bottom, ks, nout, stride=1, pad=0, group=1, param=learned):
        conv = L.Convolution(bottom, kernel_size=ks, stride=stride, num_output=nout, pad=pad,
                             group=group, param=param,
                             weight_filler=dict(type="gaussian", std=0.01),
                             bias_filler=dict(type="constant", value=0.1))
        return conv, L.ReLU(conv, in_place=True)

    def fc_relu(bottom, nout, param=learned):
        fc = L.InnerProduct(bottom, num_output=nout, param=param,
                            weight_filler=dict(type="gaussian", std=0.005),
                            bias_filler=dict(type="constant", value=0.1))
        return fc, L.ReLU(fc, in_place=True)

    def max_pool(bottom, ks, stride=1):
        return L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=ks, stride=stride)

    n = caffe.NetSpec()
    n.data = data
    param = learned if learn_all else frozen
    n.conv1, n.relu1 = conv_relu(n.data, 11, 96, stride=4, param=param)
    n.pool1 = max_pool(n.relu1, 3, stride=2)
    n.norm1 = L.LRN(n.pool1, local_size=5, alpha=1e-4, beta=0.75)
    n.conv2, n.relu2 = conv_relu(n.norm1, 5, 256, pad=2, group=2, param=param)
    n.pool2 = max_pool(n.relu2, 3, stride=2)
    n.norm2 = L.LRN(n.pool2, local_size=5, alpha=1e-4, beta=0.75)
    n.conv3, n.relu3 = conv_relu(n.norm2, 3, 384, pad=1, param=param)
    n.conv4, n.relu4 = conv_relu(n.relu3, 3, 384, pad=1, group=2, param=param)
    n.conv5, n.relu5 = conv_relu(n.relu4, 3, 256, pad=1, group=2, param=param)
    n.pool5 = max_pool(n.relu5, 3, stride=2)
    n.fc6, n.relu6 = fc_relu(n.pool5, 4096, param=param)
    if train:
        n.drop6 = fc7input = L.Dropout(n.relu6, in_place=True)
    else:
        fc7input = n.relu6
    n.fc7, n.relu7 = fc_relu(fc7input, 4096, param=param)
    if train:
        n.drop7 = fc8input = L.Dropout(n.relu7, in_place=True)
    else:
        fc8input = n.relu7
    fc8 = L.InnerProduct(fc8input, num_output=num_classes, param=learned)
    n.__setattr__(classifier_name, fc8)
    if not train:
        n.probs = L.Softmax(fc8)
    if label is not None:
        n.label = label
        n.loss = L.SoftmaxWithLoss(fc8, n.label)
        n.acc = L.Accuracy(fc8, n.label)
    return n.to_proto()


def style_net(caffe, train=True, learn_all=False, subset=None):
    """02-fine-tuning's style_net(): ImageData with a transform_param dict."""
    L = caffe.layers
    subset = subset or ("train" if train else "test")
    transform_param = dict(mirror=train, crop_size=227,
                           mean_file="data/ilsvrc12/imagenet_mean.binaryproto")
    data, label = L.ImageData(transform_param=transform_param,
                              source=f"data/flickr_style/{subset}.txt", batch_size=50,
                              new_height=256, new_width=256, ntop=2)
    return caffenet_finetune(caffe, data, label, train=train, num_classes=5,
                             classifier_name="fc8_flickr", learn_all=learn_all)


def fcn_skip(caffe):
    """A conv / pool / deconv stack cropped back to its input with coord_map.crop, next to
    an anonymous in-place ReLU and top-less Silence layers."""
    from caffe.coord_map import crop
    L, P = caffe.layers, caffe.params
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 64, 64]))
    n.conv = L.Convolution(n.data, num_output=8, kernel_size=3, pad=[1, 2], stride=1)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.up = L.Deconvolution(n.pool, convolution_param=dict(num_output=8, kernel_size=4,
                                                          stride=2, bias_term=False))
    n.score = crop(n.up, n.data)
    n.relu = L.ReLU(L.ReLU(n.score), in_place=True)
    n.silence = L.Silence(n.relu, ntop=0)
    return n.to_proto()


def build_all(caffe) -> dict:
    L = caffe.layers
    return {
        "caffenet_train": caffenet_example(caffe, "/path/to/caffe-train-lmdb"),
        "caffenet_test": caffenet_example(caffe, "/path/to/caffe-val-lmdb", batch_size=50,
                                          include_acc=True),
        "lenet_auto_train": lenet_notebook(caffe, "mnist/mnist_train_lmdb", 64),
        "lenet_auto_test": lenet_notebook(caffe, "mnist/mnist_test_lmdb", 100),
        "custom_auto_train": custom_notebook(caffe, "mnist/mnist_train_lmdb", 64),
        "imagenet_deploy": caffenet_finetune(caffe, L.DummyData(shape=dict(dim=[1, 3, 227,
                                                                                227])),
                                             train=False),
        "style_train": style_net(caffe, train=True),
        "style_test": style_net(caffe, train=False),
        "style_train_all": style_net(caffe, train=True, learn_all=True),
        "fcn_skip": fcn_skip(caffe),
    }
