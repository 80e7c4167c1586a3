"""Garbage input to every public function: each bad call raises TypeError, ValueError or IndexError
(the README's error contract; no other exception type, no crash), and writes nothing first: the
logits, the target and out= are bitwise unchanged afterwards, also when the same bad call is made
with out= or inplace=True.

test_errors.py checks the messages of the common mistakes; this module covers the rest of the input
space table by table, and with random mutations of a valid call (1000 per instruction set; with
SOFTMAX_CE_C_FUZZ_CASES=N set, N / 10 of them)."""
import os

import numpy as np
import pytest

import softmax_ce_c

ERRORS = (TypeError, ValueError, IndexError)
SHAPE = (4, 5)
LOSS_FUNCTIONS = {"softmax_cross_entropy": softmax_ce_c.softmax_cross_entropy,
                  "cross_entropy": softmax_ce_c.cross_entropy}
ROW_FUNCTIONS = {"logsumexp": softmax_ce_c.logsumexp, "log_softmax": softmax_ce_c.log_softmax,
                 "softmax": softmax_ce_c.softmax}


def fresh_logits(dtype=np.float32):
    """Logits with a recognisable bit pattern (a NaN payload and -inf included)."""
    x = np.linspace(-3.0, 3.0, np.prod(SHAPE)).reshape(SHAPE).astype(dtype)
    x[0, 0], x[1, 1] = np.nan, -np.inf
    return x


def fresh_target():
    return np.array([0, 1, 2, 3])


def fresh_out(dtype=np.float32):
    return np.full(SHAPE, 7.25, dtype)


def ragged():
    return [[1.0, 2.0], [3.0]]


def out_is_the_target():
    target = np.full(SHAPE, 0.2, np.float32)
    return {"target": target, "out": target}


# Each entry: (id, the bad arguments given the fresh logits x, the exception). The arguments replace
# the defaults logits=x, target=fresh_target(); "logits" and "target" are keys like the options.
LOSS_CASES = [
    # logits
    ("logits None", lambda x: {"logits": None}, TypeError),
    ("logits str", lambda x: {"logits": "abc"}, TypeError),
    ("logits bytes", lambda x: {"logits": b"abc"}, TypeError),
    ("logits dict", lambda x: {"logits": {"a": 1.0}}, TypeError),
    ("logits set", lambda x: {"logits": {1.0, 2.0}}, TypeError),
    ("logits object floats", lambda x: {"logits": x.astype(object)}, TypeError),
    ("logits int list", lambda x: {"logits": [[1, 2, 3, 4, 5]] * 4}, TypeError),
    ("logits ragged list", lambda x: {"logits": ragged()}, ValueError),
    ("logits datetime", lambda x: {"logits": np.zeros(SHAPE, "datetime64[s]")}, TypeError),
    ("logits structured", lambda x: {"logits": np.zeros(SHAPE, [("a", "f4")])}, TypeError),
    ("logits float scalar", lambda x: {"logits": 1.5, "target": 0}, ValueError),
    ("logits K=0", lambda x: {"logits": np.zeros((4, 0), np.float32)}, ValueError),
    # target
    ("target str", lambda x: {"target": "0123"}, TypeError),
    ("target list of str", lambda x: {"target": ["0", "1", "2", "3"]}, TypeError),
    ("target ragged", lambda x: {"target": [[0, 1], [2]]}, ValueError),
    ("target 0-d", lambda x: {"target": 1}, ValueError),
    ("target too long", lambda x: {"target": np.arange(5) % 5}, ValueError),
    ("target 2-D index", lambda x: {"target": np.zeros(SHAPE, np.int64)}, ValueError),
    ("target float rows", lambda x: {"target": [0.0, 1.0, 2.0, 3.0]}, ValueError),
    ("target datetime", lambda x: {"target": np.zeros(4, "datetime64[s]")}, TypeError),
    ("target dict", lambda x: {"target": {0: 1}}, TypeError),
    ("target huge", lambda x: {"target": [0, 1, 2, 2**63 - 1]}, IndexError),
    ("target most negative", lambda x: {"target": [0, 1, 2, -(2**63)]}, IndexError),
    ("target huge uint64", lambda x: {"target": np.array([0, 1, 2**63, 3], np.uint64)}, IndexError),
    ("target K", lambda x: {"target": [0, 1, 2, 5]}, IndexError),
    ("target -1", lambda x: {"target": [-1, 1, 2, 3]}, IndexError),
    ("prob target with ignore_index", lambda x: {"target": np.full(SHAPE, 0.2), "ignore_index": 0}, ValueError),
    # options
    ("reduction MEAN", lambda x: {"reduction": "MEAN"}, ValueError),
    ("reduction 1", lambda x: {"reduction": 1}, ValueError),
    ("reduction bytes", lambda x: {"reduction": b"mean"}, ValueError),
    ("axis None", lambda x: {"axis": None}, TypeError),
    ("axis str", lambda x: {"axis": "1"}, TypeError),
    ("axis float", lambda x: {"axis": 1.0}, TypeError),
    ("axis huge", lambda x: {"axis": 2**100}, ValueError),
    ("axis huge negative", lambda x: {"axis": -(2**100)}, ValueError),
    ("axis numpy int out of range", lambda x: {"axis": np.int64(2)}, ValueError),
    ("label_smoothing None", lambda x: {"label_smoothing": None}, TypeError),
    ("label_smoothing inf", lambda x: {"label_smoothing": float("inf")}, ValueError),
    ("label_smoothing numpy nan", lambda x: {"label_smoothing": np.float32("nan")}, ValueError),
    ("label_smoothing complex", lambda x: {"label_smoothing": 0.1j}, TypeError),
    ("label_smoothing array", lambda x: {"label_smoothing": np.array([0.1])}, TypeError),
    ("z_loss None", lambda x: {"z_loss": None}, TypeError),
    ("z_loss -inf", lambda x: {"z_loss": float("-inf")}, ValueError),
    ("z_loss bool", lambda x: {"z_loss": True}, TypeError),
    ("softcap str", lambda x: {"softcap": "3"}, TypeError),
    ("softcap -0", lambda x: {"softcap": -0.0}, ValueError),
    ("softcap numpy nan", lambda x: {"softcap": np.float64("nan")}, ValueError),
    ("weight str list", lambda x: {"weight": ["a"] * 5}, TypeError),
    ("weight object", lambda x: {"weight": np.ones(5, object)}, TypeError),
    ("weight scalar", lambda x: {"weight": 1.0}, ValueError),
    ("weight too long", lambda x: {"weight": np.ones(6)}, ValueError),
    ("weight ragged", lambda x: {"weight": ragged()}, ValueError),
    ("ignore_index None", lambda x: {"ignore_index": None}, TypeError),
    ("ignore_index str", lambda x: {"ignore_index": "-100"}, TypeError),
    ("ignore_index nan", lambda x: {"ignore_index": float("nan")}, TypeError),
    ("ignore_index too negative", lambda x: {"ignore_index": -(2**63) - 1}, ValueError),
    ("num_threads 0", lambda x: {"num_threads": 0}, ValueError),
    ("num_threads -1", lambda x: {"num_threads": -1}, ValueError),
    ("num_threads numpy 0", lambda x: {"num_threads": np.int32(0)}, ValueError),
    ("num_threads huge negative", lambda x: {"num_threads": -(2**100)}, ValueError),
    ("num_threads nan", lambda x: {"num_threads": float("nan")}, TypeError),
    ("num_threads list", lambda x: {"num_threads": [2]}, TypeError),
    ("unknown keyword", lambda x: {"temperature": 2.0}, TypeError),
]

# only softmax_cross_entropy takes these
GRADIENT_CASES = [
    ("grad_scale str", lambda x: {"grad_scale": "2"}, TypeError),
    ("grad_scale complex", lambda x: {"grad_scale": 1j}, TypeError),
    ("grad_scale inf", lambda x: {"grad_scale": float("inf")}, ValueError),
    ("grad_scale masked 0-d", lambda x: {"grad_scale": np.ma.array(2.0, mask=True)}, TypeError),
    ("grad_scale object rows", lambda x: {"grad_scale": np.ones(4, object), "reduction": "none"}, TypeError),
    ("grad_scale ragged", lambda x: {"grad_scale": ragged(), "reduction": "none"}, ValueError),
    ("grad_scale rows for sum", lambda x: {"grad_scale": np.ones(4), "reduction": "sum"}, ValueError),
    ("grad_scale 2-D rows", lambda x: {"grad_scale": np.ones((2, 2)), "reduction": "none"}, ValueError),
    ("out wrong shape", lambda x: {"out": np.zeros((5, 4), np.float32)}, ValueError),
    ("out 0-d", lambda x: {"out": np.zeros((), np.float32)}, ValueError),
    ("out wrong dtype", lambda x: {"out": np.zeros(SHAPE, np.float16)}, ValueError),
    ("out byte-swapped", lambda x: {"out": np.zeros(SHAPE, ">f4")}, ValueError),
    ("out strided", lambda x: {"out": np.zeros((4, 10), np.float32)[:, ::2]}, ValueError),
    ("out Fortran", lambda x: {"out": np.zeros(SHAPE, np.float32, order="F")}, ValueError),
    ("out misaligned", lambda x: {"out": np.zeros(4 * 5 * 4 + 1, np.uint8)[1:].view(np.float32).reshape(SHAPE)}, ValueError),
    ("out read-only", lambda x: {"out": np.lib.stride_tricks.as_strided(np.zeros(SHAPE, np.float32), writeable=False)},
     ValueError),
    ("out list", lambda x: {"out": [[0.0] * 5] * 4}, TypeError),
    ("out memoryview", lambda x: {"out": memoryview(np.zeros(SHAPE, np.float32))}, TypeError),
    ("out is the logits", lambda x: {"out": x}, ValueError),
    ("out views the logits", lambda x: {"out": x.reshape(5, 4).reshape(SHAPE)}, ValueError),
    ("out is the prob target", lambda x: out_is_the_target(), ValueError),
    ("out and inplace", lambda x: {"out": fresh_out(), "inplace": True}, ValueError),
    ("inplace 1", lambda x: {"inplace": 1}, TypeError),
    ("inplace None", lambda x: {"inplace": None}, TypeError),
    ("inplace str", lambda x: {"inplace": "True"}, TypeError),
    ("inplace on a list", lambda x: {"logits": x.tolist(), "inplace": True}, TypeError),
    ("inplace on Fortran logits", lambda x: {"logits": np.asfortranarray(x), "inplace": True}, ValueError),
    ("inplace on read-only logits", lambda x: {"logits": np.lib.stride_tricks.as_strided(x, writeable=False),
                                               "inplace": True}, ValueError),
    ("inplace with the target in the logits", lambda x: {"target": x, "inplace": True}, ValueError),
]


ROW_CASES = [
    ("x None", lambda x: {"logits": None}, TypeError),
    ("x str", lambda x: {"logits": "abc"}, TypeError),
    ("x object floats", lambda x: {"logits": x.astype(object)}, TypeError),
    ("x int", lambda x: {"logits": 3}, TypeError),
    ("x bool array", lambda x: {"logits": x > 0}, TypeError),
    ("x complex", lambda x: {"logits": x.astype(np.complex64)}, TypeError),
    ("x longdouble", lambda x: {"logits": x.astype(np.longdouble)}, TypeError),
    ("x ragged", lambda x: {"logits": ragged()}, ValueError),
    ("x float scalar", lambda x: {"logits": np.float32(1.0)}, ValueError),
    ("x K=0", lambda x: {"logits": np.zeros((3, 0))}, ValueError),
    ("axis None", lambda x: {"axis": None}, TypeError),
    ("axis str", lambda x: {"axis": "-1"}, TypeError),
    ("axis out of range", lambda x: {"axis": 2}, ValueError),
    ("axis huge", lambda x: {"axis": 2**64}, ValueError),
    ("unknown keyword", lambda x: {"out": np.zeros(SHAPE, np.float32)}, TypeError),
]


def call_with(function, arguments, row_function):
    arguments = dict(arguments)
    logits = arguments.pop("logits")
    if row_function:
        return function(logits, **arguments)
    return function(logits, arguments.pop("target"), **arguments)


def assert_fails_writing_nothing(function, arguments, error, row_function=False):
    """The call raises `error` (any of ERRORS when None) and leaves every array argument as it was."""
    arrays = {key: value for key, value in arguments.items() if isinstance(value, np.ndarray)}
    before = {key: (value.shape, value.dtype, np.array(value, copy=True).tobytes()) for key, value in arrays.items()}
    with pytest.raises(error or ERRORS):
        call_with(function, arguments, row_function)
    for key, value in arrays.items():
        assert (value.shape, value.dtype, np.array(value, copy=True).tobytes()) == before[key], f"{key} was written"


def loss_arguments(make, x):
    arguments = {"logits": x, "target": fresh_target()}
    arguments.update(make(x))
    return arguments


@pytest.mark.parametrize("function_name", LOSS_FUNCTIONS)
@pytest.mark.parametrize("name, make, error", LOSS_CASES, ids=[case[0] for case in LOSS_CASES])
def test_bad_loss_arguments(function_name, name, make, error):
    function = LOSS_FUNCTIONS[function_name]
    assert_fails_writing_nothing(function, loss_arguments(make, fresh_logits()), error)
    if function_name == "softmax_cross_entropy":
        # the same mistake with somewhere to write the gradient: still nothing written
        with_out = loss_arguments(make, fresh_logits())
        with_out.setdefault("out", fresh_out())
        assert_fails_writing_nothing(function, with_out, None)
        in_place = loss_arguments(make, fresh_logits())
        if "out" not in in_place:
            in_place.setdefault("inplace", True)
            assert_fails_writing_nothing(function, in_place, None)


@pytest.mark.parametrize("name, make, error", GRADIENT_CASES, ids=[case[0] for case in GRADIENT_CASES])
def test_bad_gradient_arguments(name, make, error):
    function = softmax_ce_c.softmax_cross_entropy
    assert_fails_writing_nothing(function, loss_arguments(make, fresh_logits()), error)
    # cross_entropy has no gradient: out, inplace and grad_scale are unknown keywords there
    assert_fails_writing_nothing(softmax_ce_c.cross_entropy, loss_arguments(make, fresh_logits()), TypeError)


@pytest.mark.parametrize("function_name", ROW_FUNCTIONS)
@pytest.mark.parametrize("name, make, error", ROW_CASES, ids=[case[0] for case in ROW_CASES])
def test_bad_row_function_arguments(function_name, name, make, error):
    arguments = {"logits": fresh_logits()}
    arguments.update(make(arguments["logits"]))
    assert_fails_writing_nothing(ROW_FUNCTIONS[function_name], arguments, error, row_function=True)


@pytest.mark.parametrize("value", ["0", "-3", "2.5", "many"])
def test_bad_thread_count_in_the_environment(monkeypatch, value):
    monkeypatch.setenv("SOFTMAX_CE_C_NUM_THREADS", value)
    x, out = fresh_logits(), fresh_out()
    assert_fails_writing_nothing(softmax_ce_c.softmax_cross_entropy,
                                 {"logits": x, "target": fresh_target(), "out": out}, ValueError)


# Random mutations of a valid call: each argument is drawn from a pool of valid and bad values, so
# that bad values meet each other and the options they interact with (out with a prob target,
# inplace with a bad axis, ...). The number of calls follows SOFTMAX_CE_C_FUZZ_CASES (test_fuzz.py).
def logits_pool(rng):
    x = fresh_logits()
    return [x, x.astype(np.float64), x.astype(np.float16), np.asfortranarray(x), x[:, ::-1],
            fresh_logits(np.float64).reshape(2, 2, 5), x[0], np.zeros((4, 0), np.float32), np.float32(1.0),
            None, "x", x.astype(object), np.zeros(SHAPE, np.int64), ragged(), x.tolist()]


def target_pool(rng):
    return [fresh_target(), np.array([0, 1, 2, 4], np.uint8), np.full(SHAPE, 0.2), np.full(SHAPE, 0.2, np.float16),
            np.zeros((2, 2), np.int64), np.int64(0), [0, 1, 2, 9], [0, 1, 2, -(2**63)], np.zeros(4, bool),
            None, "0123", [0.5, 0.5, 0.5, 0.5], np.full(SHAPE, np.nan)]


OPTION_POOLS = {
    "axis": [-1, 0, 1, 2, -3, None, 1.0, np.int8(-1)],
    "reduction": ["mean", "sum", "none", "avg", None],
    "weight": [None, np.ones(5), np.ones(4), np.full(5, np.nan), "w", np.ones(5, complex)],
    "ignore_index": [-100, 0, 2**70, None, 1.5],
    "label_smoothing": [0.0, 0.5, 1.0, -0.5, float("nan"), "0"],
    "z_loss": [0.0, 1e-3, -1.0, float("inf"), None],
    "softcap": [None, 5.0, 0.0, float("nan"), "5"],
    "grad_scale": [1.0, -2.0, float("nan"), np.ones(4), np.ones((2, 2)), "1", None],
    "num_threads": [None, 1, 2, 0, -1, "2", 1.5],
    "inplace": [False, True, 1, None],
}


def random_call(rng):
    """(function, arguments): a function and arguments drawn from the pools."""
    kind = rng.choice(["softmax_cross_entropy", "cross_entropy", "row"])
    arguments = {"logits": logits_pool(rng)[rng.integers(15)]}
    if kind == "row":
        if rng.random() < 0.5:
            arguments["axis"] = OPTION_POOLS["axis"][rng.integers(len(OPTION_POOLS["axis"]))]
        return ROW_FUNCTIONS[rng.choice(list(ROW_FUNCTIONS))], arguments, True
    pool = target_pool(rng)
    arguments["target"] = pool[rng.integers(len(pool))]
    for key, values in OPTION_POOLS.items():
        if rng.random() < 0.3 and (kind == "softmax_cross_entropy" or key not in ("grad_scale", "inplace")):
            arguments[key] = values[rng.integers(len(values))]
    if kind == "softmax_cross_entropy" and rng.random() < 0.3:
        arguments["out"] = [fresh_out(), fresh_out(np.float64), np.zeros((5, 4), np.float32), "out"][rng.integers(4)]
    return LOSS_FUNCTIONS[kind], arguments, False


N_MUTATIONS = max(1000, int(os.environ.get("SOFTMAX_CE_C_FUZZ_CASES", "0")) // 10)


def test_random_bad_calls_fail_cleanly():
    rng = np.random.default_rng(2024)
    outcomes = {"ok": 0, "error": 0}
    for i in range(N_MUTATIONS):
        function, arguments, row_function = random_call(rng)
        arrays = {key: value for key, value in arguments.items() if isinstance(value, np.ndarray)}
        before = {key: np.array(value, copy=True).tobytes() for key, value in arrays.items()}
        try:
            with np.errstate(all="ignore"):
                call_with(function, arguments, row_function)
            outcomes["ok"] += 1
            continue
        except ERRORS:
            outcomes["error"] += 1
        except Exception as error:
            pytest.fail(f"call {i}: {function.__name__}({arguments!r}) raised {type(error).__name__}: {error}")
        changed = [key for key in arrays if np.array(arrays[key], copy=True).tobytes() != before[key]]
        assert not changed, f"call {i}: {function.__name__}({arguments!r}) failed after writing {changed}"
    assert outcomes["ok"] > 0 and outcomes["error"] > 0, outcomes  # both kinds of call were made
