"""FP32 outputs in JSON: each value is written as the shortest decimal that reads back as the
same float32 (as the classification strings are), and the response is still exact JSON."""

from __future__ import annotations

import json

import numpy as np
from fastapi.testclient import TestClient
from v2_wire import HEADER, parse_binary_response, unpack_fp32

from service.v2.outputs import OutputSpec, encode_response, fp32_json, render_outputs

URL = "/v2/models/tiny-relu/infer"


def shortest(text: str) -> str:
    """The shortest decimal for the float32 nearest ``text``, found independently of numpy's
    formatting: the fewest significant digits whose float32 is the same number."""
    value = np.float32(float(text))
    for digits in range(1, 10):
        candidate = f"{float(value):.{digits}g}"
        if np.float32(float(candidate)) == value:
            return candidate
    raise AssertionError(f"{text} has no decimal of at most 9 digits")


def significant_digits(text: str) -> str:
    """'-10.643719' -> '10643719', '4.9561302e-05' -> '49561302', '100.0' -> '1'."""
    return text.lstrip("-").split("e")[0].replace(".", "").strip("0")


def test_json_fp32_outputs_are_the_shortest_float32_decimals(client: TestClient) -> None:
    batch = np.random.default_rng(31).normal(size=(3, 3, 32, 32)).astype(np.float32)
    item = {"name": "input", "shape": [3, 3, 32, 32], "datatype": "FP32", "data": batch.tolist()}
    as_json = client.post(URL, json={"inputs": [item]})
    as_binary = client.post(
        URL, json={"inputs": [item], "parameters": {"binary_data_output": True}}
    )
    assert as_json.status_code == as_binary.status_code == 200
    _, tensors = parse_binary_response(as_binary.content, int(as_binary.headers[HEADER]))
    written = json.loads(as_json.text, parse_float=str)  # each number exactly as written
    assert [o["name"] for o in written["outputs"]] == ["logits", "probabilities"]
    for output in written["outputs"]:
        texts = output["data"]
        assert len(texts) == 30 and all(isinstance(t, str) for t in texts)
        for text in texts:
            best = shortest(text)
            assert float(text) == float(best), text
            assert significant_digits(text) == significant_digits(best), f"{text} is not {best}"
        values = np.array([float(t) for t in texts]).astype(np.float32)
        assert values.tobytes() == unpack_fp32(tensors[output["name"]]).tobytes()  # bit for bit


def test_fp32_json_edge_values() -> None:
    values = np.array(
        [0.0, -0.0, 1.0, 0.1, -10.643718719482422, 1e-45, 3.4028235e38, -3.4028235e38, 1e16,
         9.999999e15, 1e-4, 9.999999e-5, 4.9561302e-05, 123456789.0],
        dtype=np.float32,
    )  # fmt: skip
    text = fp32_json(values)
    assert text == (
        "[0.0,-0.0,1.0,0.1,-10.643719,1e-45,3.4028235e+38,-3.4028235e+38,1e+16,9.999999e+15,"
        "1e-04,9.999999e-05,4.9561302e-05,1.2345679e+08]"
    )
    assert np.array(json.loads(text), dtype=np.float32).tobytes() == values.tobytes()
    assert fp32_json(np.zeros((0, 10), dtype=np.float32)) == "[]"
    big = np.random.default_rng(5).normal(size=(3, 70_000)).astype(np.float32)  # > one chunk
    assert np.array(json.loads(fp32_json(big)), dtype=np.float32).tobytes() == big.tobytes()


def test_encoded_response_is_the_json_of_its_parts() -> None:
    logits = np.array([[-10.643718719482422, 2.5, 0.1]], dtype=np.float32)
    probabilities = np.array([[0.25, 0.5, 0.25]], dtype=np.float32)
    specs = [OutputSpec("logits"), OutputSpec("probabilities", classification=2)]
    outputs, tails = render_outputs(
        specs, {"logits": logits, "probabilities": probabilities}, ["a", 'b"\u00e9', "c"]
    )
    head = {"model_name": "m", "model_version": "1", "id": 'x"\\\u2028\u00e9,"outputs":[]}'}
    body = encode_response(head, outputs)
    assert tails == []
    assert json.loads(body) == {
        **head,
        "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": [1, 3],
             "data": [-10.643719, 2.5, 0.1]},
            {"name": "probabilities", "datatype": "BYTES", "shape": [1, 2],
             "data": ['0.5:1:b"\u00e9', "0.25:0:a"]},
        ],
    }  # fmt: skip
    assert b'"data":[-10.643719,2.5,0.1]}' in body
