"""How a convolution runs, decided from its shape alone: one GEMM over the batch or image by
image, in how many chunks and blocks, on how many threads, and whether its forward is
Winograd's (kernels/winograd.py) instead. A pure function, so tests and
experiments call it directly and run the layer under any plan (layers/conv.py carries it out).

Sizes: batch N; K = C x kernel_h x kernel_w inputs per output (K / group per group's GEMM);
P = Ho x Wo outputs per image and channel.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from .conv import SHIFTS_BELOW_WIDTH
from .direct_conv import by_runs, padded_width
from .threads import PIECES_PER_THREAD, split


@dataclasses.dataclass(frozen=True)
class ConvTuning:
    """The thresholds behind a plan (measured on a 2-core AMD EPYC, L2 1 MB per core)."""

    # Inputs per output (K / group) up to which Convolution multiplies image by image, forward
    # and weight gradient: one GEMM over the whole batch is bound there by moving its big
    # output and columns through memory, while an image's output stays in cache and lands in
    # the top without a layout move. LeNet's conv1 (25) at batch 64: forward 0.40 against
    # 0.78 ms, weight gradient 0.38 against 1.04 ms (2 threads). CIFAR-10 quick's conv1 (75)
    # keeps one GEMM for its weight gradient: its batch-100 training step took 98.5 against
    # 102.6 ms (2 threads) and 177.6 against 192.0 ms (1 thread) that way.
    per_image_max_k: int = 32
    # Beyond that, the forward alone multiplies image by image when an image's columns fit in
    # a core's L2 (at most per_image_max_floats) and its GEMM is wide enough to run well on one
    # thread (at least per_image_min_pixels outputs). LeNet's conv2 (500 x 64) alone, batch
    # 64: forward 2.09 against 2.53 ms at 2 threads, 2.65 against 4.57 ms at 1 thread. The
    # weight gradient stays one GEMM there: image by image it made LeNet's training step 7-8%
    # slower. CIFAR-10 quick's conv1 (75 x 1024) and conv2 (800 x 256) go image by image too:
    # its batch-100 forward took 44.3 against 47.4 ms (2 threads), 63.4 against 69.2 ms
    # (1 thread); cifar10_full's training step 124 against 146 ms.
    per_image_max_floats: int = 1 << 18
    per_image_min_pixels: int = 64
    # A TEST net's 1x1 stride-1 unpadded layer has no columns (the GEMMs read the bottom's
    # planes): image by image whatever its size, rather than one GEMM over the batch whose
    # (K, N x P) operand and output are laid out through memory. MobileNet-SSD's pointwise
    # layers on 75 x 75 and 38 x 38 at batch 16 (64-256 channels, 36-51% of GEMM peak as one
    # GEMM).
    per_image_input_columns: bool = True
    # ... and, that far, only when every thread gets an image (batch >= threads): a lone
    # image's GEMMs ran on one thread while the other waited. Batch 1, 2 threads, whole TEST
    # forward, 5 alternating rounds on a quiet machine, with the GEMM split between the
    # threads instead: MobileNet v1 20.2 -> 15.6 ms, MobileNet-SSD 38.9 -> 28.9, ResNet-50
    # 86 -> 68, GoogLeNet 40.6 -> 36.0; CIFAR-10 and CaffeNet unchanged.
    per_image_needs_an_image_a_thread: bool = True
    # A lone image (batch below the threads) of one group, with at least band_min_macs
    # multiply-adds and at least as many outputs a thread as weight rows, is cut into bands
    # of output rows, one a thread: each thread builds its band's columns, multiplies them
    # (packing all the weights: hence the rule) and runs the epilogue, one parallel loop for
    # the layer instead of im2col's, the split GEMM's and the epilogue's, or instead of a GEMM
    # left to one thread below gemm_split_min_macs. Whole forward at batch 1, 2 threads,
    # alternating processes against the commit before (with load_channel_block's gain):
    # GoogLeNet 0.94-0.95 of the time, MobileNet v1 0.89-0.91, MobileNet-SSD 0.92-0.98,
    # CIFAR-10 quick 0.97-1.03. From 1M multiply-adds CIFAR-10 quick's conv1 and conv2 went
    # in bands too: 1.06-1.07x the time (their threads had fallen asleep in the serial layers
    # between, so each band loop paid the wake; a whole batch-1 forward of it is faster on
    # one thread, 0.47-0.53 ms, than with its pooling on two as well), while GoogLeNet gained
    # about 2% more.
    band_min_macs: int = 8 << 20
    # One GEMM over the batch is split between the threads only from gemm_split_min_macs
    # multiply-adds on: below that, handing half of it to a second thread cost more than
    # it saved. GoogLeNet's layers at batch 1 alone, 2 threads against 1 (an Intel
    # Sapphire Rapids VM of 2 vCPUs, OpenBLAS at 160-180 GFLOP/s a core): 1x1 layers of 5-13M
    # multiply-adds 1.4-2.1x the time, 20M 1.28, 26M 0.99-1.09, 32M 0.89, conv1 (118M) 0.70;
    # MobileNet's 26M pointwise layers (64 x 32 x 112 x 112: more columns than weights) ran
    # 2% slower on one thread. (A 2-core AMD EPYC VM paid from about 4M on:
    # kernels/threads.SPLIT_MIN_MACS.)
    gemm_split_min_macs: int = 20 << 20
    # Where the forward multiplies image by image and the weight gradient is one GEMM, the
    # backward runs block by block instead (blocked_backward): each thread transposes its
    # images' top diff, multiplies it with their columns (its share of the weight gradient,
    # the shares summed after in a fixed order) and into their column gradient, and scatters
    # that while it is still in its L2. One parallel region instead of five, and no pass of
    # the whole batch's column gradient through memory. LeNet's conv2 alone, batch 64, 2
    # threads, CPU time (alternating, busy machine): backward 6.13 against 6.77 ms, training
    # step 4% less CPU; 1 thread: the same (6.36 against 6.29 ms). CIFAR-10 quick's conv1
    # backward with its data gradient, 1 thread: 19.0 against 23.0 ms.
    blocked_backward: bool = True
    # Floats in one column buffer (64 MB): above it the batch is convolved in chunks, so
    # memory does not grow with the batch (Caffe's per-image im2col bounds it too).
    col_budget: int = 1 << 24
    # Floats of columns per block (1 MB) on the per-image path: a thread builds a block of its
    # images' columns and multiplies them while they are still in its L2. Blocks of 256 KB
    # cost more in calls than they saved; 1 MB and larger ran alike.
    block_floats: int = 1 << 18
    # Winograd F(2x2, 3x3) for stride-1 undilated 3x3 convolutions' forward
    # (kernels/winograd.py), taken when the inputs and the outputs per group are both at
    # least winograd_min_channels and the batch has at least winograd_min_tiles 2x2 output
    # tiles (its GEMMs' width). Measured alone against im2col (tools/bench_winograd.py, 1
    # and 2 threads, busy machine): 1.3-2.7x on VGG-16's, ResNet-50's and GoogLeNet's 3x3
    # layers at batch 1 down to 14 x 14 outputs (49 tiles) and 1.4-2.2x at batch 16; at
    # 7 x 7 and batch 1 (16 tiles) 0.78-1.14x, at batch 2 (32 tiles) 1.07-1.13x. 32
    # channels of 56 x 56: 1.34-1.59x; 16 channels: 0.86-1.34x; 3 (VGG-16's conv1_1): 0.4x.
    # That was on a 2-core AMD EPYC VM. On the Intel Sapphire Rapids VM, whose OpenBLAS runs
    # 1.6x faster against numba's transforms, 49 tiles (14 x 14 or 13 x 13 at batch 1) lost:
    # at least 64 tiles made the whole forward at batch 1 0.975 of the time (GoogLeNet),
    # 0.965 (CaffeNet), 0.98 (ResNet-50), and GoogLeNet's at batch 2 0.98 (alternating).
    winograd_min_channels: int = 32
    winograd_min_tiles: int = 64
    # Floats of Winograd's V and M together per block of whole images or of tile rows of one
    # image (16 MB): VGG-16's conv1_2 at batch 1 would need 100 MB for the whole image.
    winograd_block_floats: int = 1 << 22
    # Winograd's weights are 16 floats per 9 weights. A TEST net keeps a layer's transformed
    # weights when they are at most winograd_kept_floats; bigger ones (VGG-16's conv4 and
    # conv5, 88 of the 100 MB its 3x3 layers transform to) are transformed again at each
    # forward into one buffer the net's layers share (protonet/scratch.py), 1-2.3 ms a
    # layer: VGG-16's batch-1 peak 883 -> 814 MB, issue 14's budget 828. CaffeNet's conv3
    # (6 MB) and conv4 keep theirs: its imports alone put it over that budget.
    winograd_kept_floats: int = 6 << 18
    # Direct convolution (kernels/direct_conv.py: no columns; one group), forward and weight
    # gradient, when K = C x kernel is at least direct_min_k and the outputs, padded to a multiple
    # of 16 lanes, waste at most direct_max_waste of the work (in a TEST net:
    # direct_min_k_forward_only, direct_max_waste_forward_only). With its register tiles (8 x 32 in
    # zmm), 2 threads, alternating: CIFAR-10 quick's forward at batch 16 2.28 against 3.51 ms (the
    # 4 x 4 tiles before), its training step at batch 100 33 against 54.5 ms. LeNet's conv2 (500,
    # 50 outputs padded to 64) forward at batch 64 1.12-1.16x the images/s of its GEMMs, at batch
    # 1000 1.27-1.36x (a TEST net's now runs tiles over shifts: tiles_on_shifts); its training
    # step 1.01-1.04x (data gradient on the GEMMs, blocked_backward),
    # but tests/test_mpi.py's LeNet, trained 50 steps on 2 ranks at batch 32 against one process at
    # 64, then drifted apart by 3.7e-5 instead of 2e-7: the step-1 differences were the same
    # (4e-9), this trajectory amplified them. Training keeps LeNet's conv2 on the GEMMs. CIFAR-10's
    # conv1 (K 75, 32 outputs) runs direct in training (its weight gradient 4.9 against 6.4 ms at
    # batch 100; training step 0.90-0.97 of the time, cifar10_full 0.98, alternating) but not in a
    # TEST net (K at least direct_min_k_forward_only: its forward at batch 16 took 1.04-1.13x the
    # time of the GEMMs' with the pixels-major tiles). LeNet's conv1 (25, 20 padded to 32): 2.0
    # against 0.8 ms with the old tiles. A forward whose output rows fill runs of 16 lanes
    # (direct_conv.by_runs: the pixels in the lanes, forward_image_rows) needs only
    # direct_min_k in a TEST net too: CIFAR-10's conv1 at batch 16, 2 threads, 0.56 against
    # 0.93 ms for the GEMMs (an AMD Zen 4), at batch 1 0.06 against 0.094.
    direct_min_k: int = 64
    direct_min_k_forward_only: int = 128
    direct_max_waste: float = 0.0
    direct_max_waste_forward_only: float = 0.3
    # ... and only for small convolutions: at most direct_max_weights weights (K x outputs:
    # a quarter of L2, since every tile of 8 pixels streams them all), never 1x1 (its
    # columns are the input: nothing to save), at most direct_max_pixels outputs per image.
    # Any stride (the data gradient then on the GEMMs): a strided first layer's columns are
    # many and read once, so im2col is bound by memory (CaffeNet's conv1 at batch 16: 6.5 ms
    # of columns, 10.6 of GEMM; direct 12.3 ms in all). Pixels up to 1024 only with the 4 x 4
    # tiles; with the register tiles, up to 65536, whole forward at batch 16, alternating:
    # CaffeNet 0.94 of the time, GoogLeNet 0.97, ResNet-50 0.97 (their strided conv1s),
    # CaffeNet's training step at batch 32 0.95-0.96; GoogLeNet at batch 1, MobileNet-SSD at
    # 16 unchanged. Bigger weights ran slower direct with the 4 x 4 tiles (VGG-16's conv3_2,
    # K 2304 x 256: 0.76x, conv5_2 0.55x, CaffeNet's conv3 0.78x; not measured again).
    # Where Winograd takes a forward, it keeps it.
    direct_max_weights: int = 1 << 16
    direct_max_pixels: int = 1 << 16
    # ... and, with per_image_needs_an_image_a_thread, a lone image only below band_min_macs
    # (it runs on one thread). With the 4 x 4 tiles that loaded out at every step, its
    # columns' GEMM was as fast there; with register tiles (8 x 32 in zmm), whole forward
    # at batch 1, 2 threads, alternating: CIFAR-10 quick 0.38 against 0.45-0.46 ms.
    # The data gradient runs direct (a stride-1 convolution of the padded top diff with the
    # flipped weights) when the bottom's pixels x channels padded to 16 are at most
    # direct_data_grad_max_work x the top's pixels x channels: CIFAR-10's conv2 and conv3
    # (same size in and out, 32 channels); not LeNet's conv2 shape (12x12 from 8x8, 20
    # channels: 3.6x the work, 11.0 ms against about 3 ms as a GEMM and col2im).
    direct_data_grad_max_work: float = 1.3
    # A depthwise convolution written as Convolution (group = channels = num_output, as
    # MobileNet's prototxts have it) runs the ConvolutionDepthwise kernels
    # (kernels/depthwise.py) instead of one im2col and a one-row GEMM per channel. Whole
    # forward, TEST, 2 threads, alternating in one process: MobileNet v1 1.63x at batch 1 and
    # 1.50x at 16, MobileNet-SSD 1.14x and 1.33x.
    depthwise_direct: bool = True
    # A TEST net's per-image forward of narrow output rows (stride_h 1, under
    # SHIFTS_BELOW_WIDTH wide) with at least tiles_min_k inputs per output (fewer: 20 x 25 by
    # 25 x 576 took 1.2x cblas' time) and at most direct_max_weights weights multiplies each image
    # by register tiles over its kernel-column shifts (ConvPlan.tiles) instead of a
    # cblas_sgemm on its columns, and instead of the direct path where that pads its outputs
    # to lanes: OpenBLAS runs LeNet's conv2 (50 x 500 by 500 x 64) at 68 GMAC/s on one core,
    # the tiles over shifts that stay in L1 at about 95 (over the columns, 2 KB apart, 68).
    # LeNet's whole TEST forward against its conv2 direct (the same bits), 2 threads,
    # alternating in one process: 0.96 of the time at batch 64, 0.97 at 1000.
    # In training they made LeNet's step 0.958 of the time (2 threads, alternating in one
    # process), but tests/test_mpi.py's LeNet, 2 ranks at batch 32 against one process at 64,
    # then ended 1.6e-5 apart under Nesterov (limit 1e-5; with cblas 7e-7): the gradients'
    # sums over the batch differ in their last bits between the two splits (every layer's,
    # 1e-7), and this trajectory amplified them more (as with the direct path, above).
    tiles_on_shifts: bool = True
    tiles_min_k: int = 64


TUNING = ConvTuning()


@dataclasses.dataclass(frozen=True)
class ConvPlan:
    chunk: int                    # images whose columns are in the buffer at once
    bounds: tuple                 # (first, end) image of each chunk
    per_image_forward: bool       # forward GEMMs image by image (in blocks)
    per_image_weight_grad: bool   # weight-gradient GEMMs image by image, summed after
    block: int                    # images per block on the per-image path
    threads: int
    winograd: bool = False        # forward by Winograd F(2x2, 3x3) instead of im2col
    # Winograd's blocks: (first image, end image, first tile row, tile rows) each
    winograd_blocks: tuple = ()
    # A TEST net keeps the layer's transformed weights (else transforms them at each forward
    # into a buffer its layers share)
    winograd_weights_kept: bool = True
    direct: bool = False              # kernels/direct_conv.py: forward, weight gradient
    direct_data_grad: bool = False    # and the data gradient (else the GEMM and col2im)
    depthwise: bool = False           # kernels/depthwise.py: forward and both gradients
    # A 1x1 kernel at stride 1 without pad: an image's columns are its (C, H*W) planes, so a
    # forward whose columns no backward reads again multiplies the bottom itself.
    columns_are_input: bool = False
    # Both gradients block by block of images on the per-image forward's columns; after a
    # direct weight gradient, the data gradient alone
    blocked_backward: bool = False
    # Bands of output rows each image of the per-image forward is cut into (lone images, or
    # images whose columns outgrow a block)
    bands: int = 1
    # The per-image forward's products by register tiles over each image's kernel-column
    # shifts (kernels/conv.per_image_forward) instead of cblas_sgemm on its columns
    tiles: bool = False

    def blocks(self, images: int) -> list:
        """(first, end) of each block of a chunk of `images`: the pieces threads take in
        turn; smaller than `block` when there would be too few to share."""
        return list(_blocks(images, self.block, self.threads))

    def block_array(self, images: int):
        """blocks(images) as a read-only (B, 2) int64 array, the bounds the kernels on
        numba's threads take (made once per size, not at every pass)."""
        return _block_array(images, self.block, self.threads)

    def direct_block_array(self, images: int):
        """The direct path's blocks (B, 2), as block_array: no columns to keep in cache, so as
        few as the threads share (CIFAR-10's conv2 made 100 blocks of 1 image by the columns'
        rule)."""
        return _block_array(images, images, self.threads)

    def forward_block_array(self, images: int, rows: int):
        """The per-image forward's pieces for a chunk of `images` of `rows` output rows, as
        a read-only (B, 4) int64 array of (first image, end image, first row, end row): the
        blocks of whole images, or each image's bands."""
        return _forward_block_array(images, rows, self.block, self.threads, self.bands)


@functools.lru_cache(maxsize=1024)   # asked at every forward, for a few shapes
def _blocks(images: int, block: int, threads: int) -> tuple:
    share = threads * PIECES_PER_THREAD if threads > 1 else 1
    return tuple(split(images, max(-(-images // block), min(images, share))))


@functools.lru_cache(maxsize=1024)
def _block_array(images: int, block: int, threads: int):
    bounds = np.array(_blocks(images, block, threads), np.int64).reshape(-1, 2)
    bounds.flags.writeable = False
    return bounds


@functools.lru_cache(maxsize=1024)
def _forward_block_array(images: int, rows: int, block: int, threads: int, bands: int):
    if bands > 1:
        pieces = [(n, n + 1, a, b) for n in range(images) for a, b in split(rows, bands)]
    else:
        pieces = [(s, e, 0, rows) for s, e in _blocks(images, block, threads)]
    array = np.array(pieces, np.int64).reshape(-1, 4)
    array.flags.writeable = False
    return array


def plan_convolution(batch: int, k: int, pixels: int, group: int, threads: int,
                     tuning: ConvTuning = TUNING, *, geometry: tuple = (), outputs: int = 0,
                     out_shape: tuple = (), forward_only: bool = False) -> ConvPlan:
    """The plan for a batch of `batch` images with K = `k` inputs per output (all groups) and
    `pixels` outputs per image and channel, on `threads` threads. A Convolution also gives
    its `geometry` (kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w, dilation_h,
    dilation_w), `outputs` (num_output) and `out_shape` (Ho, Wo), which may make its forward
    Winograd's or (forward and backward) direct; `forward_only` for a TEST net's."""
    if (tuning.depthwise_direct and geometry and group > 1 and outputs == group
            and k == group * geometry[0] * geometry[1]):
        return ConvPlan(chunk=batch, bounds=((0, batch),), per_image_forward=False,
                        per_image_weight_grad=False, block=batch, threads=max(1, threads),
                        depthwise=True)
    winograd, winograd_blocks = _winograd_plan(batch, k, group, tuning, geometry, outputs,
                                               out_shape)
    # U (16, group, outputs / group, channels / group), kernels/winograd.py
    winograd_weights_kept = 16 * outputs * (k // (9 * group)) <= tuning.winograd_kept_floats
    lone_images = batch < threads and tuning.per_image_needs_an_image_a_thread
    # The direct path gives each thread whole images: a lone image runs on one thread, so it
    # takes only those too small for bands of rows on every thread.
    lone_and_big = lone_images and outputs * k * pixels >= tuning.band_min_macs
    direct, direct_data_grad = (False, False) if winograd or lone_and_big else _direct_plan(
        k, pixels, group, tuning, geometry, outputs, out_shape, forward_only)
    chunk = max(1, min(batch, tuning.col_budget // max(1, k * pixels)))
    per_image_weight_grad = k // group <= tuning.per_image_max_k
    columns_are_input = tuple(geometry[:6]) == (1, 1, 0, 0, 1, 1)
    per_image_forward = per_image_weight_grad or (
        pixels >= tuning.per_image_min_pixels
        and (k * pixels <= tuning.per_image_max_floats
             or (columns_are_input and forward_only and tuning.per_image_input_columns))
        and (batch >= threads or not tuning.per_image_needs_an_image_a_thread))
    # A TEST net's per-image forward of narrow rows by register tiles over shifts, rather
    # than cblas, or than the direct path where its lanes would hold padding
    tiles = (tuning.tiles_on_shifts and forward_only and per_image_forward and group == 1
             and not (winograd or columns_are_input or lone_images) and bool(out_shape)
             and geometry[4] == 1 and out_shape[1] < SHIFTS_BELOW_WIDTH
             and tuning.tiles_min_k <= k and k * outputs <= tuning.direct_max_weights
             and k * pixels <= tuning.block_floats
             and (not direct or padded_width(outputs) > outputs))
    if tiles:
        direct = direct_data_grad = False
    bands = 1
    if (lone_images and threads > 1 and not winograd and out_shape and group == 1
            and pixels >= threads * outputs
            and outputs * k * pixels >= tuning.band_min_macs):
        bands = min(out_shape[0], threads)
        per_image_forward = per_image_forward or bands > 1
    elif (per_image_forward and not lone_images and not winograd and not direct and out_shape
          and group == 1 and k * pixels > tuning.block_floats):
        # An image whose columns outgrow a block (a first layer of few inputs per output on
        # a big image) in bands that fit one: MobileNet-SSD's conv0 (27 x 22500 columns) at
        # batch 16, 11.4 against 12.7 ms; its whole forward 0.98 of the time (alternating).
        bands = min(out_shape[0], -(-k * pixels // tuning.block_floats))
    if (outputs and not (per_image_forward or winograd or direct)
            and outputs * (k // group) * pixels * batch < tuning.gemm_split_min_macs):
        threads = 1
    return ConvPlan(chunk=chunk,
                    bounds=tuple((a, min(batch, a + chunk)) for a in range(0, batch, chunk)),
                    columns_are_input=columns_are_input,
                    per_image_forward=per_image_forward,
                    per_image_weight_grad=per_image_weight_grad,
                    block=max(1, tuning.block_floats // max(1, k * pixels)),
                    threads=max(1, threads), winograd=winograd,
                    winograd_blocks=winograd_blocks,
                    winograd_weights_kept=winograd_weights_kept, direct=direct,
                    direct_data_grad=direct_data_grad,
                    blocked_backward=tuning.blocked_backward and chunk == batch and (
                        (per_image_forward and not per_image_weight_grad and not winograd
                         and not direct and bands == 1)
                        or (direct and not direct_data_grad)),
                    bands=bands, tiles=tiles)


def _direct_plan(k, pixels, group, tuning, geometry, outputs, out_shape, forward_only):
    """(direct, direct data gradient) for a Convolution's shape."""
    if not geometry or group != 1:
        return False, False
    kh, kw, ph, pw, sh, sw, dh, dw = geometry
    channels = k // (kh * kw)
    min_k, max_waste = ((tuning.direct_min_k_forward_only, tuning.direct_max_waste_forward_only)
                        if forward_only else (tuning.direct_min_k, tuning.direct_max_waste))
    if by_runs((sh, sw), out_shape[1]):
        min_k = min(min_k, tuning.direct_min_k)   # the forward in runs along the rows
    if not (k >= min_k and kh * kw > 1
            and k * outputs <= tuning.direct_max_weights and pixels <= tuning.direct_max_pixels
            and padded_width(outputs) <= outputs * (1 + max_waste)):
        return False, False
    if (sh, sw) != (1, 1):   # the data gradient on the GEMMs
        return True, False
    # At stride 1 the bottom is the top grown by the kernel's reach, less the pad.
    bottom_pixels = ((out_shape[0] + dh * (kh - 1) - 2 * ph)
                     * (out_shape[1] + dw * (kw - 1) - 2 * pw))
    data_work = bottom_pixels * padded_width(channels)
    return True, data_work <= pixels * channels * tuning.direct_data_grad_max_work


def _winograd_plan(batch, k, group, tuning, geometry, outputs, out_shape):
    """(True, blocks) for a forward on Winograd's path, or (False, ()) for im2col's."""
    if not (geometry and tuple(geometry[:2]) + tuple(geometry[4:]) == (3, 3, 1, 1, 1, 1)):
        return False, ()
    channels, outputs_g = k // (9 * group), outputs // group
    if min(channels, outputs_g) < tuning.winograd_min_channels:
        return False, ()
    tiles_h, tiles_w = -(-out_shape[0] // 2), -(-out_shape[1] // 2)
    if batch * tiles_h * tiles_w < tuning.winograd_min_tiles:
        return False, ()
    # V and M (kernels/winograd.py) of a row of tiles, against the block budget.
    per_row = 16 * tiles_w * (channels + outputs_g) * group
    rows = max(1, tuning.winograd_block_floats // per_row)
    if rows < tiles_h:    # part of an image per block
        return True, tuple((n, n + 1, r, min(rows, tiles_h - r))
                           for n in range(batch) for r in range(0, tiles_h, rows))
    images = max(1, min(batch, rows // tiles_h))
    return True, tuple((a, min(batch, a + images), 0, tiles_h)
                       for a in range(0, batch, images))
