"""The demo archives on a real TorchServe: real images and real text, over HTTP with token auth."""

from __future__ import annotations

import base64

import pytest

from tests.conftest import png_bytes


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_image_archive_classifies_a_real_image(served, fmt):
    response = served.predict("resnet18", png_bytes((320, 240), fmt=fmt))
    assert response.status_code == 200, response.text
    top = response.json()
    assert len(top) == 5
    assert all(label.startswith("class_") for label in top)
    assert abs(sum(top.values())) <= 1.0 + 1e-6


def test_image_archive_accepts_base64_json(served):
    body = {"image": base64.b64encode(png_bytes()).decode()}
    response = served.predict("resnet18", json_body=body)
    assert response.status_code == 200, response.text
    assert len(response.json()) == 5


def test_text_archive_classifies_real_text(served):
    response = served.predict("text_classifier", b"The service was quick and the staff were friendly.")
    assert response.status_code == 200, response.text
    labels = response.json()
    assert set(labels) <= {"negative", "neutral", "positive", "question"} and len(labels) == 3


def test_text_archive_accepts_json(served):
    response = served.predict("text_classifier", json_body={"text": "Is this thing on?"})
    assert response.status_code == 200, response.text


def test_requests_without_the_token_are_refused(served):
    import requests

    response = requests.post(f"{served.inference_url}/predictions/resnet18", data=png_bytes(), timeout=30)
    assert response.status_code in (400, 401)


def test_a_bad_image_gets_a_json_400_and_the_worker_stays_up(served):
    bad = served.predict("resnet18", b"this is not an image")
    assert bad.status_code == 400
    assert "not a readable JPEG or PNG" in bad.json()["error"]["message"]
    assert served.predict("resnet18", png_bytes()).status_code == 200
