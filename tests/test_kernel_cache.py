"""Every kernel a common net runs is kept in numba's on-disk cache: a kernel numba cannot cache
("uses dynamic globals", e.g. numba.get_num_threads() inside it, or a local named like a module
function) is compiled again in every process, seconds at each start."""
import os
import subprocess
import sys

NET = """
input: "data" input_shape { dim: 1 dim: 16 dim: 72 dim: 72 }
layer { name: "dw" type: "Convolution" bottom: "data" top: "dw"
  convolution_param { num_output: 16 group: 16 kernel_size: 3 pad: 1 } }
layer { name: "norm" type: "LRN" bottom: "dw" top: "norm" }
layer { name: "maxpool" type: "Pooling" bottom: "norm" top: "maxpool"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "avepool" type: "Pooling" bottom: "maxpool" top: "avepool"
  pooling_param { pool: AVE kernel_size: 3 stride: 1 pad: 1 } }
layer { name: "conv" type: "Convolution" bottom: "avepool" top: "conv"
  convolution_param { num_output: 8 kernel_size: 3 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param { num_output: 10 } }
"""


def test_kernels_of_a_common_net_are_cached(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    script = ("import numpy as np, protonet\n"
              f"net = protonet.Net({str(tmp_path / 'net.prototxt')!r}, protonet.TEST)\n"
              "net.forward(data=np.ones((1, 16, 72, 72), np.float32))\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PROTONET_NUMBA_CACHE="1")
    out = subprocess.run([sys.executable, "-W", "always", "-c", script], capture_output=True,
                         text=True, env=env, check=True)
    assert "Cannot cache" not in out.stderr, out.stderr
