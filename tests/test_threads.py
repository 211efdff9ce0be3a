"""protonet's compute threads and the convolution plan (kernels/threads.py, kernels/conv_plan.py):
GEMMs split between threads give BLAS's product, pieces all run once, errors reach the caller,
BLAS is held to one thread only inside, and plans follow the layer shapes they were tuned on."""
import dataclasses
import os
import platform
import subprocess
import sys
import threading

import numpy as np
import pytest

from protonet.kernels import blas, threads
from protonet.kernels.conv_plan import TUNING, plan_convolution


@pytest.mark.parametrize("m, k, n", [(64, 300, 256), (700, 300, 40), (50, 500, 4096 + 7)])
@pytest.mark.parametrize("transposed", [False, True])
def test_split_matmul_equals_one_gemm(m, k, n, transposed):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((n, k), dtype=np.float32).T if transposed else \
        rng.standard_normal((k, n), dtype=np.float32)
    axis, pieces = threads.plan_gemm(m, n, k, 2)
    assert len(pieces) > 1 and pieces[0][0] == 0 and pieces[-1][1] == (m, n)[axis]
    out = np.full((m, n), np.nan, np.float32)
    threads.matmul(a, b, out, threads=2)
    # Each piece is a BLAS GEMM of the same operands, so the values are BLAS's own.
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("engine", ["numba threads", "python threads"])
@pytest.mark.parametrize("groups", [2, 3])
@pytest.mark.parametrize("m, k, n", [(64, 300, 256), (700, 300, 40)])
def test_grouped_products_split_evenly_between_threads(groups, m, k, n, engine, monkeypatch):
    """Two groups on two threads: a group a thread, whole; three: each group in two pieces
    (six pieces, three a thread). Each group's product is BLAS's."""
    if engine == "python threads":
        monkeypatch.setattr(blas, "_found", (0, 0))
    axis, pieces = threads.plan_gemm(m, n, k, 2, groups)
    assert len(pieces) == (1 if groups == 2 else 2)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((groups, m, k), dtype=np.float32)
    b = rng.standard_normal((groups, n, k), dtype=np.float32).transpose(0, 2, 1)
    out = np.full((groups, m, n), np.nan, np.float32)
    threads.grouped_matmul(a, b, out, threads=2)
    for g in range(groups):
        np.testing.assert_allclose(out[g], a[g] @ b[g], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True),
                                              (True, True)])
@pytest.mark.parametrize("axis", [0, 1])
def test_gemm_pieces_on_numba_threads_are_numpys_own_products(trans_a, trans_b, axis):
    """Pieces of stacked products (2 x 3 matrices, as Winograd's 16 x groups) whose operands
    are transposed views, cut along rows or columns into slices of a bigger output, run
    through numpy's own OpenBLAS: bitwise np.matmul's values piece by piece, and nothing
    written outside the pieces."""
    assert blas.available()
    rng = np.random.default_rng(1)
    m, k, n = 70, 90, 50

    def operand(rows, cols, transposed):
        shape = (2, 3) + ((cols, rows) if transposed else (rows, cols))
        x = rng.standard_normal(shape, dtype=np.float32)
        return x.transpose(0, 1, 3, 2) if transposed else x

    a = operand(m, k, trans_a)
    b = operand(k, n, trans_b)
    big = np.full((2, 3, m + 3, n + 5), -7.0, np.float32)
    out = big[:, :, 1:m + 1, 2:n + 2]
    bounds = threads.split((m, n)[axis], 3, 16)
    table = blas.piece_table(a, b, out, axis, bounds)
    assert len(table) == 6 * len(bounds)
    with threads.one_blas_thread():
        blas.gemm_pieces(table)
    for i in np.ndindex(2, 3):
        for s, e in bounds:
            if axis == 0:
                want = np.matmul(a[i][s:e], b[i])
                got = out[i][s:e]
            else:
                want = np.matmul(a[i], b[i][:, s:e])
                got = out[i][:, s:e]
            np.testing.assert_array_equal(got, want)
    untouched = np.ones(big.shape, bool)
    untouched[:, :, 1:m + 1, 2:n + 2] = False
    assert (big[untouched] == -7.0).all()


@pytest.mark.parametrize("engine", ["numba threads", "python threads"])
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("m, k, n", [(500, 64, 800), (64, 500, 800), (10, 20, 30)])
def test_accumulating_products_add_into_the_output(m, k, n, n_threads, engine, monkeypatch):
    """InnerProduct's weight gradient is added into the diff by the GEMM (cblas's beta 1):
    into zeros the very bits of the product alone (a fresh iteration's diff), into values
    already there (iter_size > 1) their sum, on any number of threads and without cblas."""
    if engine == "python threads":
        monkeypatch.setattr(blas, "_found", (0, 0))
    rng = np.random.default_rng(3)
    a = rng.standard_normal((k, m), dtype=np.float32).T   # a transposed view, as dy.T
    b = rng.standard_normal((k, n), dtype=np.float32)
    alone = np.empty((m, n), np.float32)
    threads.matmul(a, b, alone, threads=n_threads)
    into_zeros = np.zeros((m, n), np.float32)
    threads.matmul(a, b, into_zeros, threads=n_threads, accumulate=True)
    np.testing.assert_array_equal(into_zeros, alone)
    before = rng.standard_normal((m, n), dtype=np.float32)
    summed = before.copy()
    threads.matmul(a, b, summed, threads=n_threads, accumulate=True)
    np.testing.assert_allclose(summed, before + alone, rtol=1e-6, atol=1e-5)
    assert not np.array_equal(summed, alone)


def test_operands_cblas_cannot_take_go_to_numpy():
    """A view with no unit stride (every other column) has no cblas layout: no table, and
    grouped_matmul multiplies it with np.matmul instead."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal((64, 600), dtype=np.float32)[:, ::2]
    b = rng.standard_normal((300, 256), dtype=np.float32)
    out = np.empty((64, 256), np.float32)
    assert blas.piece_table(a[None], b[None], out[None], 1, [(0, 128), (128, 256)]) is None
    threads.matmul(a, b, out, threads=2)
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-4)


def test_grouped_products_run_in_turn_on_one_thread_or_when_small(monkeypatch):
    """Two groups of a small product, or any on one thread: no pieces handed to threads
    (each would cost a wake), the products BLAS's all the same."""
    handed = []
    monkeypatch.setattr(blas, "gemm_pieces", lambda table: handed.append(len(table)))
    monkeypatch.setattr(threads, "run_pieces", lambda *args: handed.append(args))
    rng = np.random.default_rng(3)
    for (m, k, n), n_threads in [((16, 50, 40), 2), ((64, 300, 256), 1)]:
        a = rng.standard_normal((2, m, k), dtype=np.float32)
        b = rng.standard_normal((2, k, n), dtype=np.float32)
        out = np.empty((2, m, n), np.float32)
        threads.grouped_matmul(a, b, out, threads=n_threads)
        np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-4)
    assert handed == []


def test_small_products_are_not_split():
    assert threads.plan_gemm(20, 64, 25, 2)[1] == [(0, 64)]
    assert threads.plan_gemm(500, 4096, 500, 1) == (1, [(0, 4096)])


def test_products_of_many_rows_split_along_rows():
    # LeNet's ip1 weight gradient: in columns, two threads ran it no faster than one.
    assert threads.plan_gemm(500, 800, 64, 2) == (0, [(0, 240), (240, 500)])
    # Few rows: the longer side, the columns (LeNet's conv2 forward over the batch).
    assert threads.plan_gemm(50, 4096, 500, 2) == (1, [(0, 2048), (2048, 4096)])
    assert threads.plan_gemm(100, 40, 3000, 2)[0] == 0
    # Many inputs per output, or wide: the columns (CaffeNet's conv3 at batch 16).
    assert threads.plan_gemm(384, 2704, 2304, 2)[0] == 1
    assert threads.plan_gemm(128, 12544, 64, 2)[0] == 1


def test_split_covers_the_range_once_with_aligned_starts():
    for n, parts, align in [(100, 4, 16), (5, 8, 1), (4096, 4, 16), (17, 3, 16)]:
        bounds = threads.split(n, parts, align)
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a < b for a, b in bounds)
        assert all(b0[1] == b1[0] for b0, b1 in zip(bounds, bounds[1:]))
        assert all(a % align == 0 for a, _ in bounds)


def test_every_piece_runs_once_on_several_threads():
    seen, names = [], set()

    def work(s, e, shared):
        assert shared
        seen.extend(range(s, e))
        names.add(threading.current_thread().name)

    threads.run_pieces(work, threads.split(1000, 50), threads=2)
    assert sorted(seen) == list(range(1000))


def test_an_error_in_a_piece_reaches_the_caller_after_the_others_finish():
    done = []

    def work(s, e, shared):
        if s == 3:
            raise ValueError("piece 3 failed")
        done.append(s)

    with pytest.raises(ValueError, match="piece 3 failed"):
        threads.run_pieces(work, [(i, i + 1) for i in range(8)], threads=2)
    assert sorted(done) == [0, 1, 2, 4, 5, 6, 7]


def test_blas_is_on_one_thread_only_inside_and_numpy_first_changes_nothing():
    """numpy imported before protonet (as every pycaffe script does): the BLAS thread count is
    one inside protonet's GEMMs and the user's own count after."""
    script = (
        "import numpy, threadpoolctl\n"
        "from protonet.kernels import threads\n"
        "blas = lambda: threadpoolctl.threadpool_info()[0]['num_threads']\n"
        "threadpoolctl.threadpool_limits(2, user_api='blas')\n"
        "inside = []\n"
        "threads.run_pieces(lambda s, e, shared: inside.append(blas()), [(0, 1)], 1)\n"
        "print(inside[0], blas())\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["1", "2"]



AVX512 = {name: True for name in blas.AVX512}


@pytest.mark.parametrize("pinned, core, features, warns", [
    ("Haswell", "Haswell", AVX512, True),            # an image's pin on an AVX-512 CPU
    ("zen", "Zen", {**AVX512, "sse2": True}, True),
    (None, "Haswell", AVX512, False),                 # OpenBLAS's own choice: not ours to judge
    ("Haswell", "Haswell", {**AVX512, "avx512bw": False}, False),   # an AVX2 CPU
    ("SkylakeX", "SkylakeX", AVX512, False),          # AVX-512 kernels already
    ("Haswell", None, AVX512, False)])                # no OpenBLAS found
def test_a_pin_to_avx2_kernels_on_an_avx512_cpu_is_named(pinned, core, features, warns):
    note = blas.pinned_kernels_note(pinned, core, features)
    assert (note is not None) is warns
    if warns:
        assert f"OPENBLAS_CORETYPE={pinned}" in note and core in note and "half" in note


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                    reason="OPENBLAS_CORETYPE=Haswell names an x86 core")
def test_a_net_built_under_a_pin_logs_the_warning_once():
    script = (
        "import logging, protonet\n"
        "from llvmlite import binding\n"
        "from protonet.kernels import blas\n"
        "seen = []\n"
        "logging.getLogger('protonet').warning = seen.append\n"
        "text = 'input: \"x\" input_shape { dim: 1 dim: 2 }'\n"
        "for _ in range(2):\n"
        "    protonet.Net(param=protonet.prototxt.parse_net_text(text), phase=protonet.TEST)\n"
        "avx512 = all(binding.get_host_cpu_features().get(n, False) for n in blas.AVX512)\n"
        "library = blas._numpy_cblas()[0]\n"
        "core = library.architecture if library else 'none'\n"
        "print(len(seen), avx512, core.lower() in blas.AVX2_CORES, core)\n")
    env = {**os.environ, "OPENBLAS_CORETYPE": "Haswell"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, env=env)
    count, avx512, avx2_core, core = out.stdout.split()
    if core == "none":
        pytest.skip("numpy's BLAS is not an OpenBLAS")
    assert avx2_core == "True"   # OpenBLAS took the pin
    assert count == ("1" if avx512 == "True" else "0")


@pytest.mark.parametrize("user_env, expected", [
    ({}, "3000"),                                   # a short spin before sleeping
    ({"OMP_WAIT_POLICY": "PASSIVE"}, "None"),       # the user's choice stands
    ({"GOMP_SPINCOUNT": "0"}, "0")])
def test_openmp_threads_spin_briefly_unless_the_user_chose(user_env, expected):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    script = "import numpy, os, protonet\nprint(os.environ.get('GOMP_SPINCOUNT'))\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, env={**env, **user_env})
    assert out.stdout.split() == [expected]


def test_one_piece_inside_a_held_block_runs_on_the_caller_with_blas_still_held():
    """A net's pass holds BLAS to one thread around all its layers; a layer's single piece
    (batch 1) then runs straight on the calling thread, not shared, errors raised as they
    are."""
    calls = []

    def work(s, e, shared):
        blas = {lib.get_num_threads() for lib in threads._blas()}   # numpy's GEMMs' BLAS
        calls.append((s, e, shared, threading.current_thread() is threading.main_thread(),
                      blas))

    with threads.one_blas_thread():
        threads.run_pieces(work, [(0, 1)], threads=2)
        with pytest.raises(ValueError, match="piece failed"):
            threads.run_pieces(lambda s, e, shared: (_ for _ in ()).throw(
                ValueError("piece failed")), [(0, 1)], threads=2)
    assert calls == [(0, 1, False, True, {1})]

# (batch, K, P, group): LeNet conv1 and conv2, CIFAR-10 quick conv2, VGG-16 conv1_2
LENET_CONV1, LENET_CONV2 = (64, 25, 576, 1), (64, 500, 64, 1)
CIFAR_CONV2, VGG_CONV1_2 = (100, 800, 256, 1), (16, 576, 224 * 224, 1)


def test_plans_follow_the_shapes_they_were_measured_on():
    conv1 = plan_convolution(*LENET_CONV1, threads=2)
    assert conv1.per_image_forward and conv1.per_image_weight_grad and conv1.bounds == ((0, 64),)
    conv2 = plan_convolution(*LENET_CONV2, threads=2)
    assert conv2.per_image_forward and not conv2.per_image_weight_grad
    assert conv2.blocked_backward and not conv1.blocked_backward
    assert plan_convolution(*CIFAR_CONV2, threads=2).per_image_forward
    # One image on two threads: the GEMM is split instead (MobileNet's 14 x 14 1x1 layers).
    mobilenet_1x1 = (1, 512, 196, 1)
    assert not plan_convolution(*mobilenet_1x1, threads=2).per_image_forward
    assert plan_convolution(*mobilenet_1x1, threads=1).per_image_forward
    assert plan_convolution(2, *mobilenet_1x1[1:], threads=2).per_image_forward
    # ... but only a GEMM big enough to repay the second thread: MobileNet's 14 x 14 1x1
    # (512 x 512 x 196, 51M multiply-adds) is split, GoogLeNet's 14 x 14 pool_proj
    # (64 x 480 x 196, 6M) stays on one. From band_min_macs on, a layer whose outputs
    # outnumber its weights' rows is cut into a band of rows a thread instead.
    geometry = (1, 1, 0, 0, 1, 1, 1, 1)
    assert plan_convolution(1, 480, 196, 1, 2, geometry=geometry, outputs=64,
                            out_shape=(14, 14)).threads == 1
    more = dataclasses.replace(TUNING, band_min_macs=1 << 20)
    pool_proj = plan_convolution(1, 480, 196, 1, 2, more, geometry=geometry, outputs=64,
                                 out_shape=(14, 14))
    assert pool_proj.per_image_forward and pool_proj.bands == 2 and pool_proj.threads == 2
    assert [tuple(b) for b in pool_proj.forward_block_array(1, 14)] == [(0, 1, 0, 7),
                                                                       (0, 1, 7, 14)]
    assert not pool_proj.blocked_backward   # the backward's GEMMs split as before
    mobilenet = plan_convolution(*mobilenet_1x1, threads=2, geometry=geometry, outputs=512,
                                 out_shape=(14, 14))
    assert mobilenet.threads == 2 and mobilenet.bands == 1
    # Grouped layers share the threads by groups, not bands.
    assert plan_convolution(1, 480, 196, 2, 2, more, geometry=geometry, outputs=64,
                            out_shape=(14, 14)).bands == 1
    assert plan_convolution(16, 480, 196, 1, 2, geometry=geometry, outputs=64,
                            out_shape=(14, 14)).threads == 2
    # A TEST net's 1x1 layer on big planes (MobileNet-SSD's conv3: 128 x 128 on 75 x 75) has
    # no columns to keep in L2: image by image, where a TRAIN net's takes one GEMM.
    ssd_conv3 = dict(geometry=geometry, outputs=128, out_shape=(75, 75))
    assert plan_convolution(16, 128, 5625, 1, 2, forward_only=True, **ssd_conv3).per_image_forward
    assert not plan_convolution(16, 128, 5625, 1, 2, **ssd_conv3).per_image_forward
    vgg = plan_convolution(*VGG_CONV1_2, threads=2)
    assert not vgg.per_image_forward and not vgg.per_image_weight_grad
    # An image's columns (576 x 50,176 floats) pass the budget alone: one image at a time.
    assert vgg.chunk == 1 and vgg.bounds == tuple((i, i + 1) for i in range(16))
    cifar = plan_convolution(*CIFAR_CONV2, threads=2)
    assert cifar.chunk * 800 * 256 <= TUNING.col_budget < (cifar.chunk + 1) * 800 * 256
    assert cifar.bounds == ((0, cifar.chunk), (cifar.chunk, 100))


def test_grouped_convolutions_plan_on_inputs_per_group():
    assert plan_convolution(8, 4 * 9, 196, group=4, threads=2).per_image_weight_grad
    assert not plan_convolution(8, 4 * 9 * 4, 196, group=1, threads=2).per_image_weight_grad


def test_per_image_blocks_cover_the_chunk_and_give_each_thread_work():
    plan = plan_convolution(*LENET_CONV2, threads=2)
    blocks = plan.blocks(64)
    assert blocks[0][0] == 0 and blocks[-1][1] == 64 and len(blocks) >= 4
    assert all(e - s <= plan.block for s, e in blocks)
    one = dataclasses.replace(plan, threads=1)
    assert len(one.blocks(64)) == -(-64 // plan.block)
    assert plan.blocks(1) == [(0, 1)]
