"""HDF5Data: batches from HDF5 files (h5py, an optional dependency: pip install protonet[hdf5])."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import parallel, rng
from ..errors import DataError
from ..registry import register_layer
from .base import Layer


@register_layer("HDF5Data")
class HDF5Data(Layer):
    """Caffe "HDF5Data" (V1 HDF5_DATA): each top is the HDF5 dataset of the same name.

    Reads hdf5_data_param: source (a text file listing .h5 files, one per line), batch_size,
    shuffle (a new order of the files, and of the rows within each file, every epoch, drawn
    from the net's random seed). Every dataset of a file has the same number of rows (the
    first axis); a top has shape (batch_size, *the dataset's other axes). As in Caffe, one
    file at a time is held in memory and a batch may span files; values are read as float32.
    Keeps its position like the Data layer, so a resumed run continues exactly.
    """

    num_bottom = 0
    num_top = (1, None)

    def setup(self, bottom, top):
        try:
            import h5py
        except ImportError:
            raise self.error("reading HDF5 needs the h5py package: pip install h5py "
                             "(or protonet[hdf5])", DataError) from None
        self.h5py = h5py
        p = self.param.hdf5_data_param
        self.where = f"layer '{self.name}' (HDF5Data)"
        if p.batch_size < 1:
            raise DataError(f"{self.where}: hdf5_data_param.batch_size must be positive")
        try:
            lines = Path(p.source).read_text().splitlines()
        except OSError as e:
            raise DataError(f"{self.where}: cannot read the file list {p.source}: "
                            f"{e.strerror or e}") from None
        self.files = [line.strip() for line in lines if line.strip()]
        if not self.files:
            raise DataError(f"{self.where}: the file list {p.source} names no files")
        self.batch_size = int(p.batch_size)
        self.tops = list(self.param.top)
        self.seed = int(rng.generator().integers(1 << 62)) if p.shuffle else None
        self.rows = [self._rows(path) for path in self.files]
        self.epoch_rows = sum(self.rows)
        self._loaded = (None, None)   # ((epoch, file index), {top: array})
        self.position = 0
        # Data-parallel training: this rank's share of the rows (positions count them all).
        self.shard = parallel.data_shard(self.phase, self.batch_size)

    def _rows(self, path) -> int:
        try:
            with self.h5py.File(path, "r") as f:
                counts = set()
                for name in self.tops:
                    if name not in f:
                        raise DataError(f"{self.where}: {path} has no dataset '{name}' (it "
                                        f"has {', '.join(sorted(f.keys()))})")
                    counts.add(f[name].shape[0])
        except OSError as e:
            raise DataError(f"{self.where}: cannot read HDF5 file {path}: {e}") from None
        if len(counts) != 1:
            raise DataError(f"{self.where}: datasets {self.tops} of {path} have different "
                            f"numbers of rows {sorted(counts)}")
        return counts.pop()

    def _file_order(self, epoch: int) -> np.ndarray:
        if self.seed is None:
            return np.arange(len(self.files))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.files))

    def _file(self, epoch: int, k: int) -> dict:
        """The k-th file of `epoch`, loaded, its rows shuffled when asked."""
        if self._loaded[0] != (epoch, k):
            index = int(self._file_order(epoch)[k])
            with self.h5py.File(self.files[index], "r") as f:
                arrays = {name: np.asarray(f[name], np.float32) for name in self.tops}
            if self.seed is not None:
                order = np.random.default_rng([self.seed, epoch, k]).permutation(
                    self.rows[index])
                arrays = {name: a[order] for name, a in arrays.items()}
            self._loaded = ((epoch, k), arrays)
        return self._loaded[1]

    def reshape(self, bottom, top):
        first = self._file(0, 0)
        for blob, name in zip(top, self.tops):
            blob.reshape(self.batch_size, *first[name].shape[1:])

    def forward(self, bottom, top):
        filled = 0
        while filled < self.batch_size:
            self.position = self.shard.next_kept(self.position)
            run_end = self.shard.run_end(self.position)
            epoch, offset = divmod(self.position, self.epoch_rows)
            order = self._file_order(epoch)
            k = 0
            while offset >= self.rows[order[k]]:
                offset -= self.rows[order[k]]
                k += 1
            arrays = self._file(epoch, k)
            take = min(self.batch_size - filled, self.rows[order[k]] - offset)
            if run_end is not None:
                take = min(take, run_end - self.position)
            for blob, name in zip(top, self.tops):
                rows = arrays[name][offset:offset + take]
                if rows.shape[1:] != blob.shape[1:]:
                    raise DataError(f"{self.where}: dataset '{name}' of "
                                    f"{self.files[order[k]]} has rows of shape "
                                    f"{rows.shape[1:]}, the first file's are {blob.shape[1:]}")
                blob.data[filled:filled + take] = rows
            filled += take
            self.position += take

    def reader_position(self) -> int:
        """Rows read so far (counting across epochs): where a resumed run continues."""
        return self.position

    def seek(self, position: int) -> None:
        self.position = int(position)
