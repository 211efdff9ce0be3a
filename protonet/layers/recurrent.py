"""Recurrent layers: RNN and LSTM, with Caffe's equations, blob order and state rules.

Caffe runs these as a net unrolled in time. protonet runs the same arithmetic as a loop over
time steps with one GEMM per step, and back-propagates through time within the batch.
Semantics kept from Caffe's RecurrentLayer:
- Bottoms: x (T, N, ...), cont (T, N) (0 at the first step of a sequence: the previous state
  is dropped), optionally x_static (N, ...) added at every step, then with
  recurrent_param.expose_hidden the initial states (h_0; LSTM also c_0), each (1, N, H).
- Tops: the output (T, N, H), then with expose_hidden the final states.
- Without expose_hidden, a forward starts from the previous forward's final state, so a long
  sequence can be fed in consecutive batches (truncated back-propagation through time).
- No gradient flows to cont or to the initial states. Unlike Caffe, gradients on the exposed
  final states do flow back into the sequence.
"""
from __future__ import annotations

import numpy as np

from ..errors import NetDefinitionError
from ..registry import register_layer
from .base import Layer
from .neuron import sigmoid


class _Recurrent(Layer):
    """Bottom and top bookkeeping shared by RNN and LSTM; subclasses name their states and
    run `step_forward` / `step_backward`."""

    num_bottom = (2, None)
    num_top = (1, None)
    num_states = 1          # h (RNN); h and c (LSTM)
    gates = 1               # rows of W per hidden unit: 1 (RNN), 4 (LSTM)

    def setup(self, bottom, top):
        p = self.param.recurrent_param
        if p.num_output < 1:
            raise self.error("recurrent_param.num_output must be positive", NetDefinitionError)
        self.hidden = int(p.num_output)
        self.expose_hidden = bool(p.expose_hidden)
        exposed = self.num_states if self.expose_hidden else 0
        self.static = len(bottom) > 2 + exposed
        if len(bottom) != 2 + int(self.static) + exposed:
            raise self.error(f"takes x, cont, optionally x_static, and with expose_hidden "
                             f"{self.num_states} initial state(s); got {len(bottom)} bottoms",
                             NetDefinitionError)
        if len(top) != 1 + exposed:
            raise self.error(f"takes {1 + exposed} top(s), got {len(top)}", NetDefinitionError)
        x = bottom[0]
        if x.num_axes < 2:
            raise self.error(f"x must be (T, N, ...), got shape {x.shape}")
        self.inputs = int(np.prod(x.shape[2:], dtype=np.int64))
        shapes = self.blob_shapes(int(np.prod(bottom[2].shape[1:], dtype=np.int64))
                                  if self.static else 0)
        fillers = [p.bias_filler if len(s) == 1 else p.weight_filler for s in shapes]
        self.learnable_blobs(shapes, fillers)
        self.state = None

    def reshape(self, bottom, top):
        x, cont = bottom[0], bottom[1]
        t, n = x.shape[:2]
        if cont.shape != (t, n):
            raise self.error(f"cont must be (T, N) = {(t, n)}, got {cont.shape}")
        if int(np.prod(x.shape[2:], dtype=np.int64)) != self.inputs:
            raise self.error(f"x has {int(np.prod(x.shape[2:]))} inputs per step, the "
                             f"weights expect {self.inputs}")
        if self.static and bottom[2].shape[0] != n:
            raise self.error(f"x_static must have N = {n} rows, got {bottom[2].shape}")
        state_shape = (1, n, self.hidden)
        if self.expose_hidden:
            for blob in bottom[-self.num_states:]:
                if blob.shape != state_shape:
                    raise self.error(f"initial state '{blob.name}' must be {state_shape}, got "
                                     f"{blob.shape}")
            for blob in top[1:]:
                blob.reshape(state_shape)
        if self.state is None or self.state[0].shape != (n, self.hidden):
            self.state = [np.zeros((n, self.hidden), np.float32)
                          for _ in range(self.num_states)]
        top[0].reshape(t, n, self.hidden)

    def _initial_states(self, bottom):
        if self.expose_hidden:
            return [b.data.reshape(b.shape[1:]).astype(np.float32) for b in
                    bottom[-self.num_states:]]
        return [s.copy() for s in self.state]   # carried over from the previous forward

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(bottom[0].shape[0], bottom[0].shape[1], -1)
        cont = bottom[1].data
        w_x, b_x = self.blobs[0].data, self.blobs[1].data
        # Input transform of every step at once (Caffe's x_transform over axis 2).
        self.x_in = x @ w_x.T + b_x
        if self.static:
            s = bottom[2].data.reshape(bottom[2].shape[0], -1)
            self.x_in += (s @ self.blobs[2].data.T)[None]
        states = self._initial_states(bottom)
        self.tape = []
        for t in range(x.shape[0]):
            states, out = self.step_forward(t, states, cont[t][:, None], top[0].data[t])
        self.state = [s.copy() for s in states]
        if self.expose_hidden:
            for blob, s in zip(top[1:], states):
                blob.data[0] = s

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("cannot backpropagate to the sequence indicators (cont)",
                             NetDefinitionError)
        x = bottom[0].data.reshape(bottom[0].shape[0], bottom[0].shape[1], -1)
        cont = bottom[1].data
        d_in = np.empty_like(self.x_in)
        # Gradients arriving at exposed final states flow back too (Caffe drops them: its
        # final-state tops share data, not diff, with the unrolled net).
        carry = ([blob.diff[0].astype(np.float32) for blob in top[1:]] if self.expose_hidden
                 else [np.zeros_like(s) for s in self.state])
        for t in reversed(range(x.shape[0])):
            carry = self.step_backward(t, top[0].diff[t], carry, cont[t][:, None], d_in[t])
        flat_d = d_in.reshape(-1, d_in.shape[2])
        if self.param_propagate_down[0]:
            self.blobs[0].diff += flat_d.T @ x.reshape(-1, x.shape[2])
        if self.param_propagate_down[1]:
            self.blobs[1].diff += flat_d.sum(axis=0)
        if propagate_down[0]:
            bottom[0].diff.reshape(flat_d.shape[0], -1)[...] = flat_d @ self.blobs[0].data
        if self.static:
            d_static = d_in.sum(axis=0)
            s = bottom[2].data.reshape(bottom[2].shape[0], -1)
            if self.param_propagate_down[2]:
                self.blobs[2].diff += d_static.T @ s
            if propagate_down[2]:
                bottom[2].diff.reshape(s.shape)[...] = d_static @ self.blobs[2].data

    def allow_force_backward(self, bottom_index):
        # Gradients reach x and x_static only (Caffe parity).
        return bottom_index == 0 or (self.static and bottom_index == 2)

    def recurrent_blob(self, k: int):
        """The k-th blob after the input transform ones (W_x, b_x and W_x_static)."""
        return self.blobs[2 + int(self.static) + k]


@register_layer("RNN")
class RNN(_Recurrent):
    """Caffe "RNN": h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_s]),
    o_t = tanh(W_ho h_t + b_o); the top is o. Reads recurrent_param num_output,
    weight_filler, bias_filler, expose_hidden. Blobs (Caffe's order): W_xh, b_h,
    [W_xh_static], W_hh, W_ho, b_o.
    """

    def blob_shapes(self, static_inputs):
        h = self.hidden
        shapes = [(h, self.inputs), (h,)]
        if static_inputs:
            shapes.append((h, static_inputs))
        return shapes + [(h, h), (h, h), (h,)]

    def step_forward(self, t, states, cont, out):
        (h_prev,) = states
        w_hh, w_ho, b_o = (self.recurrent_blob(k).data for k in range(3))
        h_conted = cont * h_prev
        h = np.tanh(h_conted @ w_hh.T + self.x_in[t])
        np.tanh(h @ w_ho.T + b_o, out=out)
        self.tape.append((h_conted, h, out.copy()))
        return [h], out

    def step_backward(self, t, d_out, carry, cont, d_in):
        (d_h_next,) = carry
        h_conted, h, o = self.tape[t]
        w_hh, w_ho = self.recurrent_blob(0), self.recurrent_blob(1)
        b_o = self.recurrent_blob(2)
        d_o = d_out * (1 - o * o)
        w_ho.diff += d_o.T @ h
        b_o.diff += d_o.sum(axis=0)
        d_h = d_o @ w_ho.data + d_h_next
        d_in[...] = d_h * (1 - h * h)
        w_hh.diff += d_in.T @ h_conted
        return [(d_in @ w_hh.data) * cont]


@register_layer("LSTM")
class LSTM(_Recurrent):
    """Caffe "LSTM": gates = W_hc (cont_t h_{t-1}) + W_xc x_t + b_c [+ W_xc_static x_s],
    split into i, f, o (sigmoid) and g (tanh) in that order; c_t = cont_t f c_{t-1} + i g,
    h_t = o tanh(c_t); the top is h. Reads recurrent_param as RNN. Blobs (Caffe's order):
    W_xc (4H, inputs), b_c (4H), [W_xc_static], W_hc (4H, H). States: h and c.
    """

    num_states = 2

    def blob_shapes(self, static_inputs):
        h4 = 4 * self.hidden
        shapes = [(h4, self.inputs), (h4,)]
        if static_inputs:
            shapes.append((h4, static_inputs))
        return shapes + [(h4, self.hidden)]

    def step_forward(self, t, states, cont, out):
        h_prev, c_prev = states
        w_hc = self.recurrent_blob(0).data
        h_conted = cont * h_prev
        pre = h_conted @ w_hc.T + self.x_in[t]
        n = self.hidden
        i, f, o = (sigmoid(pre[:, k * n:(k + 1) * n]) for k in range(3))
        g = np.tanh(pre[:, 3 * n:])
        c = cont * f * c_prev + i * g
        tanh_c = np.tanh(c)
        np.multiply(o, tanh_c, out=out)
        self.tape.append((h_conted, c_prev, i, f, o, g, tanh_c))
        return [out.copy(), c], out

    def step_backward(self, t, d_out, carry, cont, d_in):
        d_h_next, d_c_next = carry
        h_conted, c_prev, i, f, o, g, tanh_c = self.tape[t]
        w_hc = self.recurrent_blob(0)
        d_h = d_out + d_h_next
        d_c = d_c_next + d_h * o * (1 - tanh_c * tanh_c)
        n = self.hidden
        d_in[:, :n] = d_c * g * i * (1 - i)
        d_in[:, n:2 * n] = d_c * cont * c_prev * f * (1 - f)
        d_in[:, 2 * n:3 * n] = d_h * tanh_c * o * (1 - o)
        d_in[:, 3 * n:] = d_c * i * (1 - g * g)
        w_hc.diff += d_in.T @ h_conted
        return [(d_in @ w_hc.data) * cont, d_c * cont * f]
