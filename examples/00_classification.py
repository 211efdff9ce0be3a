"""Caffe's tutorial 00-classification ("Instant recognition with a pre-trained model") as a
script, step for step, on protonet through `import caffe`. Only the downloads are replaced:
CaffeNet's deploy net is written with NetSpec and given random weights from its fillers,
the ImageNet labels and mean are stand-ins, and the cat photo is a generated picture (so the
"predictions" are those of an untrained net). Figures are saved as PNGs in --out.

    python examples/00_classification.py                       # the notebook's sizes
    python examples/00_classification.py --batch 2 --image-size 67 --fc-width 64   # quick
"""
import argparse
import os
import tempfile
import time

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import caffe  # noqa: E402
import tutorial_common as local  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default=None, help="folder for the files made (default: a temp dir)")
parser.add_argument("--batch", type=int, default=50, help="batch size the net is reshaped to")
parser.add_argument("--image-size", type=int, default=227, help="CaffeNet's input side")
parser.add_argument("--fc-width", type=int, default=4096, help="fc6 and fc7 outputs")
parser.add_argument("--timing-runs", type=int, default=3)
args = parser.parse_args()
out = args.out or tempfile.mkdtemp(prefix="00_classification_")
os.makedirs(out, exist_ok=True)

plt.rcParams["figure.figsize"] = (10, 10)
plt.rcParams["image.interpolation"] = "nearest"
plt.rcParams["image.cmap"] = "gray"

# 2. Load net and set up input preprocessing ----------------------------------------------------
caffe.set_mode_cpu()
model_def = local.write_caffenet(os.path.join(out, "deploy.prototxt"), batch=10,
                                 image_size=args.image_size, fc_width=args.fc_width)
model_weights = local.random_caffenet_weights(model_def, os.path.join(
    out, "bvlc_reference_caffenet.caffemodel"))
net = caffe.Net(model_def,      # defines the structure of the model
                model_weights,  # contains the trained weights
                caffe.TEST)     # use test mode (e.g., don't perform dropout)

labels_file, mean_file = local.imagenet_files(out)
mu = np.load(mean_file)
mu = mu.mean(1).mean(1)  # average over pixels to obtain the mean (BGR) pixel values
print("mean-subtracted values:", [(c, float(m)) for c, m in zip("BGR", mu)])

transformer = caffe.io.Transformer({"data": net.blobs["data"].data.shape})
transformer.set_transpose("data", (2, 0, 1))     # move image channels to outermost dimension
transformer.set_mean("data", mu)                 # subtract the dataset-mean value in each channel
transformer.set_raw_scale("data", 255)           # rescale from [0, 1] to [0, 255]
transformer.set_channel_swap("data", (2, 1, 0))  # swap channels from RGB to BGR

# 3. CPU classification --------------------------------------------------------------------------
net.blobs["data"].reshape(args.batch,        # batch size
                          3,                 # 3-channel (BGR) images
                          args.image_size, args.image_size)
image = caffe.io.load_image(local.generated_photo(os.path.join(out, "cat.jpg")))
transformed_image = transformer.preprocess("data", image)
fig = plt.figure()
plt.imshow(image)
local.save_figure(fig, out, "image")

net.blobs["data"].data[...] = transformed_image
output = net.forward()
output_prob = output["prob"][0]  # the output probability vector for the first image
print("predicted class is:", output_prob.argmax())

labels = np.loadtxt(labels_file, str, delimiter="\t")
print("output label:", labels[output_prob.argmax()])
top_inds = output_prob.argsort()[::-1][:5]  # reverse sort and take five largest items
print("probabilities and labels:")
for prob, label in zip(output_prob[top_inds], labels[top_inds]):
    print(f"  {prob:.5f}  {label}")

# 4. Switching to GPU mode (protonet logs that it runs on the CPU and carries on) ------------------
start = time.perf_counter()
for _ in range(args.timing_runs):
    net.forward()
print(f"CPU forward: {(time.perf_counter() - start) / args.timing_runs:.3f} s per batch")
caffe.set_device(0)  # if we have multiple GPUs, pick the first one
caffe.set_mode_gpu()
net.forward()  # run once before timing to set up memory
start = time.perf_counter()
for _ in range(args.timing_runs):
    net.forward()
print(f"'GPU' forward: {(time.perf_counter() - start) / args.timing_runs:.3f} s per batch")

# 5. Examining intermediate output ----------------------------------------------------------------
for layer_name, blob in net.blobs.items():
    print(layer_name + "\t" + str(blob.data.shape))
for layer_name, param in net.params.items():
    print(layer_name + "\t" + str(param[0].data.shape), str(param[1].data.shape))

filters = net.params["conv1"][0].data
fig, ax = plt.subplots()
local.vis_square(filters.transpose(0, 2, 3, 1), ax)
local.save_figure(fig, out, "conv1_filters")

for name, feat in (("conv1", net.blobs["conv1"].data[0, :36]),
                   ("pool5", net.blobs["pool5"].data[0])):
    fig, ax = plt.subplots()
    local.vis_square(feat, ax)
    local.save_figure(fig, out, name + "_output")

feat = net.blobs["fc6"].data[0]
fig = plt.figure()
plt.subplot(2, 1, 1)
plt.plot(feat.flat)
plt.subplot(2, 1, 2)
_ = plt.hist(feat.flat[feat.flat > 0], bins=100)
local.save_figure(fig, out, "fc6")

feat = net.blobs["prob"].data[0]
fig = plt.figure(figsize=(15, 3))
plt.plot(feat.flat)
local.save_figure(fig, out, "prob")

# 6. Try your own image (a second generated picture in place of the download) ----------------------
image = caffe.io.load_image(local.generated_photo(os.path.join(out, "image.jpg"), 300, 400,
                                                  seed=7))
net.blobs["data"].data[...] = transformer.preprocess("data", image)
net.forward()
output_prob = net.blobs["prob"].data[0]
top_inds = output_prob.argsort()[::-1][:5]
print("probabilities and labels:")
for prob, label in zip(output_prob[top_inds], labels[top_inds]):
    print(f"  {prob:.5f}  {label}")
print("done; files in", out)
