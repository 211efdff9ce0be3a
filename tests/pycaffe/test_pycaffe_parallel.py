"""caffe.solver_count / solver_rank and their setters (protonet.parallel)."""
import caffe


def test_solver_counters_record_what_a_script_sets():
    assert (caffe.solver_count(), caffe.solver_rank()) == (1, 0)
    caffe.set_solver_count(4)
    caffe.set_solver_rank(2)
    caffe.set_multiprocess(True)
    try:
        assert (caffe.solver_count(), caffe.solver_rank()) == (4, 2)
    finally:
        caffe.set_solver_count(1)
        caffe.set_solver_rank(0)
        caffe.set_multiprocess(False)
