"""Settings for numba's OpenMP thread pool, made before it starts (at the first parallel
kernel, so this works whatever the user imported first), unless the user already chose
(OMP_WAIT_POLICY or GOMP_SPINCOUNT set):

GOMP_SPINCOUNT=3000 (libgomp counts about 100,000 spins a millisecond: some 30 us), so a
thread that has finished a parallel loop waits a moment for the next before it sleeps. On
a 2-vCPU VM waking a sleeping thread costs 50-70 us, about what a batch-1 layer's loop takes;
a layer's next loop or the next layer's mostly comes within those 30 us. libgomp's own default
spins 3 ms, long enough to steal the core that protonet's GEMM threads (kernels/threads.py)
or other programs need. Whole TEST forwards, 2 threads, alternating processes, against
OMP_WAIT_POLICY=PASSIVE (sleep at once, the setting before): MobileNet v1 batch 1 0.80 of the
time, MobileNet-SSD 0.88, GoogLeNet 0.95-0.97, ResNet-50 0.87-0.94, CaffeNet 0.97-0.99, CIFAR-10
quick batch 16 0.92-0.97, VGG-16 and CaffeNet batch 16 unchanged; 10,000 spins lost on
ResNet-50, 30,000 made it 1.1-1.25x slower. LeNet training at batch 64 1.03x faster quiet and
1.04x beside another CPU-bound program, its forward unchanged.
"""
import os

if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "3000"
