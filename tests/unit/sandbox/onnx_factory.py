"""Small ONNX models built with the onnx helper API, for the sandbox tests and bench."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def _model(nodes: list, inputs: list, outputs: list, initializers: list) -> bytes:
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def logistic_regression(weights: list[float], bias: float = 0.0, *, input_name: str = "features") -> bytes:
    """score = sigmoid(features @ weights + bias), shape [N, 1]."""
    w = numpy_helper.from_array(np.asarray(weights, dtype=np.float32).reshape(-1, 1), "W")
    b = numpy_helper.from_array(np.asarray([bias], dtype=np.float32), "B")
    nodes = [
        helper.make_node("MatMul", [input_name, "W"], ["z0"]),
        helper.make_node("Add", ["z0", "B"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["score"]),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", len(weights)])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        [w, b],
    )


def linear_scores(matrix: list[list[float]]) -> bytes:
    """score = features @ matrix, shape [N, K] (argmax picks the label)."""
    m = numpy_helper.from_array(np.asarray(matrix, dtype=np.float32), "M")
    return _model(
        [helper.make_node("MatMul", ["features", "M"], ["score"])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", len(matrix)])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", len(matrix[0])])],
        [m],
    )


def label_of_first_feature(feature_count: int) -> bytes:
    """label = int64(features[:, 0]): an index into the schema's labels."""
    nodes = [
        helper.make_node("Constant", [], ["idx"], value=helper.make_tensor("i", TensorProto.INT64, [1], [0])),
        helper.make_node("Gather", ["features", "idx"], ["col"], axis=1),
        helper.make_node("Cast", ["col"], ["label2d"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["label2d", "flat_shape"], ["label"]),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", feature_count])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"])],
        [numpy_helper.from_array(np.asarray([-1], dtype=np.int64), "flat_shape")],
    )


def wrong_dtype(feature_count: int) -> bytes:
    """Takes double features: breaks the float32 convention."""
    return _model(
        [helper.make_node("Identity", ["features"], ["score"])],
        [helper.make_tensor_value_info("features", TensorProto.DOUBLE, ["N", feature_count])],
        [helper.make_tensor_value_info("score", TensorProto.DOUBLE, ["N", feature_count])],
        [],
    )


def no_decision_output(feature_count: int) -> bytes:
    return _model(
        [helper.make_node("Identity", ["features"], ["probabilities"])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", feature_count])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", feature_count])],
        [],
    )


def memory_bomb(feature_count: int) -> bytes:
    """Ignores its input and materializes a 40 GB tensor."""
    shape = numpy_helper.from_array(np.asarray([100_000, 100_000], dtype=np.int64), "shape")
    nodes = [
        helper.make_node(
            "ConstantOfShape", ["shape"], ["big"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
        ),
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
        helper.make_node("Gather", ["features", "zero"], ["first"], axis=1),
        helper.make_node("Add", ["first", "total"], ["score"]),
    ]
    zero = numpy_helper.from_array(np.asarray([0], dtype=np.int64), "zero")
    return _model(
        nodes,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", feature_count])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        [shape, zero],
    )
