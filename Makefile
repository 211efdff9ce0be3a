# The two set-up commands of the README:
#   make train   install, convert the real Fashion-MNIST into LMDBs, train the deeply
#                supervised LeNet (models/lenet_dsn.prototxt)
#   make test    install, run the whole test suite (what CI runs)
PYTHON ?= python3
DATA ?= data/fashion_mnist
FASHION_DEB := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: install dataset data train test bench

install:
	$(PYTHON) -m pip install --quiet -e '.[test]'

# The real Fashion-MNIST without internet: Debian's dataset-fashion-mnist package (when
# apt-get is there and we may use it); elsewhere `protonet data` downloads the official files.
dataset:
	@if [ ! -f $(FASHION_DEB) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) \
	  || echo "note: could not install dataset-fashion-mnist; protonet data will try to download"; \
	fi

data: install dataset
	@if [ -d $(DATA)/fashion_mnist_train_lmdb ] && [ -d $(DATA)/fashion_mnist_test_lmdb ]; then \
	  echo "$(DATA): LMDBs already there"; \
	else protonet data fashion-mnist $(DATA) --overwrite; fi

train: data
	protonet train models/lenet_dsn.prototxt

test: install dataset
	$(PYTHON) -m pytest -q

bench: install dataset
	$(PYTHON) tools/bench.py
