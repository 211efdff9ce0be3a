"""Caffe's tutorial net_surgery ("Editing model parameters") as a script, step for step, on
protonet through `import caffe`. Only the downloads are replaced: the cat photos are
generated pictures, CaffeNet's deploy and fully convolutional definitions are written with
NetSpec, and CaffeNet's weights are random (drawn from its fillers). Figures are saved as
PNGs in --out.

    python examples/net_surgery.py                                   # the notebook's sizes
    python examples/net_surgery.py --image-size 67 --conv-size 131 --fc-width 64   # quick
"""
import argparse
import os
import tempfile

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import caffe  # noqa: E402
import tutorial_common as local  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default=None, help="folder for the files made (default: a temp dir)")
parser.add_argument("--image-size", type=int, default=227, help="CaffeNet's input side")
parser.add_argument("--conv-size", type=int, default=451,
                    help="input side of the fully convolutional CaffeNet")
parser.add_argument("--fc-width", type=int, default=4096, help="fc6 and fc7 outputs")
args = parser.parse_args()
out = args.out or tempfile.mkdtemp(prefix="net_surgery_")
os.makedirs(out, exist_ok=True)

plt.rcParams["figure.figsize"] = (10, 10)
plt.rcParams["image.interpolation"] = "nearest"
plt.rcParams["image.cmap"] = "gray"

# Designer filters -------------------------------------------------------------------------------
# examples/net_surgery/conv.prototxt: one 5 x 5 convolution with three outputs.
conv_def = os.path.join(out, "conv.prototxt")
with open(conv_def, "w") as f:
    f.write('name: "convolution"\n'
            'layer { name: "data" type: "Input" top: "data"\n'
            '        input_param { shape: { dim: 1 dim: 1 dim: 100 dim: 100 } } }\n'
            'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"\n'
            '        convolution_param { num_output: 3 kernel_size: 5 stride: 1\n'
            '          weight_filler { type: "gaussian" std: 0.01 }\n'
            '          bias_filler { type: "constant" value: 0 } } }\n')

caffe.set_mode_cpu()
net = caffe.Net(conv_def, caffe.TEST)
print("blobs {}\nparams {}".format(net.blobs.keys(), net.params.keys()))

cat_gray = local.generated_photo(os.path.join(out, "cat_gray.jpg"), grey=True)
im = np.array(caffe.io.load_image(cat_gray, color=False)).squeeze()
fig = plt.figure()
plt.title("original image")
plt.imshow(im)
plt.axis("off")
local.save_figure(fig, out, "original")

im_input = im[np.newaxis, np.newaxis, :, :]
net.blobs["data"].reshape(*im_input.shape)
net.blobs["data"].data[...] = im_input


def show_filters(net, name):
    net.forward()
    fig = plt.figure()
    filt_min, filt_max = net.blobs["conv"].data.min(), net.blobs["conv"].data.max()
    for i in range(3):
        plt.subplot(1, 4, i + 2)
        plt.title("filter #{} output".format(i))
        plt.imshow(net.blobs["conv"].data[0, i], vmin=filt_min, vmax=filt_max)
        plt.tight_layout()
        plt.axis("off")
    local.save_figure(fig, out, name)


show_filters(net, "random_filters")

# pick first filter output
conv0 = net.blobs["conv"].data[0, 0]
print("pre-surgery output mean {:.2f}".format(conv0.mean()))
# set first filter bias to 1
net.params["conv"][1].data[0] = 1.
net.forward()
print("post-surgery output mean {:.2f}".format(conv0.mean()))

ksize = net.params["conv"][0].data.shape[2:]
# make Gaussian blur
sigma = 1.
y, x = np.mgrid[-ksize[0] // 2 + 1:ksize[0] // 2 + 1, -ksize[1] // 2 + 1:ksize[1] // 2 + 1]
g = np.exp(-((x ** 2 + y ** 2) / (2.0 * sigma ** 2)))
gaussian = (g / g.sum()).astype(np.float32)
net.params["conv"][0].data[0] = gaussian
# make Sobel operator for edge detection
net.params["conv"][0].data[1:] = 0.
sobel = np.array((-1, -2, -1, 0, 0, 0, 1, 2, 1), dtype=np.float32).reshape((3, 3))
net.params["conv"][0].data[1, 0, 1:-1, 1:-1] = sobel  # horizontal
net.params["conv"][0].data[2, 0, 1:-1, 1:-1] = sobel.T  # vertical
show_filters(net, "designed_filters")

# Casting a classifier into a fully convolutional network ------------------------------------------------
deploy = local.write_caffenet(os.path.join(out, "deploy.prototxt"), batch=10,
                              image_size=args.image_size, fc_width=args.fc_width)
if args.conv_size < args.image_size:
    raise SystemExit("--conv-size must be at least --image-size")
full_conv = local.write_caffenet(os.path.join(out, "bvlc_caffenet_full_conv.prototxt"), batch=1,
                                 image_size=args.conv_size, fc_width=args.fc_width,
                                 fully_convolutional=True, classifier_size=args.image_size)
weights = local.random_caffenet_weights(deploy, os.path.join(
    out, "bvlc_reference_caffenet.caffemodel"))

# Load the original network and extract the fully connected layers' parameters.
net = caffe.Net(deploy, weights, caffe.TEST)
params = ["fc6", "fc7", "fc8"]
# fc_params = {name: (weights, biases)}
fc_params = {pr: (net.params[pr][0].data, net.params[pr][1].data) for pr in params}
for fc in params:
    print("{} weights are {} dimensional and biases are {} dimensional".format(
        fc, fc_params[fc][0].shape, fc_params[fc][1].shape))

# Load the fully convolutional network to transplant the parameters.
net_full_conv = caffe.Net(full_conv, weights, caffe.TEST)
params_full_conv = ["fc6-conv", "fc7-conv", "fc8-conv"]
conv_params = {pr: (net_full_conv.params[pr][0].data, net_full_conv.params[pr][1].data)
               for pr in params_full_conv}
for conv in params_full_conv:
    print("{} weights are {} dimensional and biases are {} dimensional".format(
        conv, conv_params[conv][0].shape, conv_params[conv][1].shape))

for pr, pr_conv in zip(params, params_full_conv):
    conv_params[pr_conv][0].flat = fc_params[pr][0].flat  # flat unrolls the arrays
    conv_params[pr_conv][1][...] = fc_params[pr][1]

net_full_conv.save(os.path.join(out, "bvlc_caffenet_full_conv.caffemodel"))

# load input and configure preprocessing
_, mean_file = local.imagenet_files(out)
im = caffe.io.load_image(local.generated_photo(os.path.join(out, "cat.jpg")))
transformer = caffe.io.Transformer({"data": net_full_conv.blobs["data"].data.shape})
transformer.set_mean("data", np.load(mean_file).mean(1).mean(1))
transformer.set_transpose("data", (2, 0, 1))
transformer.set_channel_swap("data", (2, 1, 0))
transformer.set_raw_scale("data", 255.0)
# make classification map by forward and print prediction indices at each location
out_maps = net_full_conv.forward_all(data=np.asarray([transformer.preprocess("data", im)]))
print(out_maps["prob"][0].argmax(axis=0))
# show net input and confidence map (probability of the top prediction at each location)
fig = plt.figure()
plt.subplot(1, 2, 1)
plt.imshow(np.clip(transformer.deprocess("data", net_full_conv.blobs["data"].data[0]), 0, 1))
plt.subplot(1, 2, 2)
plt.imshow(out_maps["prob"][0, 281])
local.save_figure(fig, out, "classification_map")

# The transplanted net is the classifier, slid over the image: on an input of the classifier's
# size it gives one window, and that window's probabilities are the classifier's. (Windows of
# a larger input differ a little from classifying their crops: inside the larger image, conv2-5
# see real pixels where the crop's edges are zero-padded.)
crop = net_full_conv.blobs["data"].data[:, :, :args.image_size, :args.image_size].copy()
net_full_conv.blobs["data"].reshape(*crop.shape)
window_prob = net_full_conv.forward(data=crop)["prob"][0, :, 0, 0]
net.blobs["data"].reshape(*crop.shape)
classifier_prob = net.forward(data=crop)["prob"][0]
assert np.allclose(classifier_prob, window_prob, rtol=1e-3, atol=1e-7), \
    "the fully convolutional net disagrees with the classifier on a single window"
print("fully convolutional and classifier outputs agree on a classifier-sized input")
print("done; files in", out)
