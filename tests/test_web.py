"""The web page at `/`, in a real browser (Debian's chromium driven by Playwright) against the real stack of
the `gateway` fixture: TorchServe with the tiny test archives, plus the shipped default archive
(model_store/lite0-int8.mar) registered through the gateway's admin API for these tests."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, val_images
from woof.card import archive_card

CHROMIUM = Path(os.environ.get("WOOF_CHROMIUM") or "/usr/bin/chromium")  # Debian's; never a downloaded one
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REAL_MODEL = "lite0-int8"
SCREENSHOT = ROOT / "reports" / "web" / "screenshot.png"
DESKTOP = {"width": 1000, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")  # session: set up before the stack, so a missing Chromium fails at once
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(f"the browser tests need Debian's chromium at {CHROMIUM}: apt-get install -y chromium "
                    "chromium-driver (scripts/setup.sh installs them when it runs as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:  # (the page's CSP forbids eval: waits use locators, not JS strings)
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=90_000)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def real_model(gateway):
    """The shipped default archive, registered in the test stack through POST /admin/register."""
    archive = gateway.store / f"{REAL_MODEL}.mar"
    shutil.copy(ROOT / "model_store" / f"{REAL_MODEL}.mar", archive)
    auth = {"Authorization": f"Bearer {gateway.admin_token}"}
    r = requests.post(f"{gateway.url}/admin/register", json={"archive": archive.name}, headers=auth, timeout=300)
    assert r.status_code == 201, r.text
    try:
        yield REAL_MODEL
    finally:
        requests.post(f"{gateway.url}/admin/unregister", json={"model": REAL_MODEL}, headers=auth, timeout=300)
        archive.unlink(missing_ok=True)


class Page:
    """A browser tab on the gateway's page that records every request and every script error."""

    def __init__(self, browser, gateway, viewport, **options):
        self.context = browser.new_context(viewport=viewport, **options)
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.requests, self.errors, self.predictions = [], [], []
        self.page.on("request", lambda r: self.requests.append(r.url))
        # the page's own /predict answers: what it shows must be exactly these
        self.page.on("response", lambda r: "/predict" in r.url and self.predictions.append(r))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        # (a 4xx answer to fetch() is logged by Chromium as "Failed to load resource": expected here)
        self.page.on("console", lambda m: m.type == "error" and "Failed to load resource" not in m.text
                     and self.errors.append(m.text))
        self.page.goto(f"{gateway.url}/")
        self.page.wait_for_selector("#model:not([disabled])")

    def choose(self, path=None, **file):
        self.page.set_input_files("#file", str(path) if path else file)

    def result(self) -> dict:
        self.page.wait_for_selector("#result:not([hidden])")
        top = self.page.locator("#top li")
        return {
            "breeds": top.locator(".breed").all_inner_texts(),
            "percent": top.locator(".pct").all_inner_texts(),
            "bars": [self.page.evaluate("e => e.style.width", b) for b in top.locator(".bar span").element_handles()],
            "answer": self.page.inner_text("#answer") if self.page.is_visible("#answer") else None,
            "unknown": self.page.is_visible("#unknown"),
            "meta": self.page.inner_text("#meta"),
        }

    def answer(self) -> dict:
        """The JSON of the page's latest /predict answer."""
        assert self.predictions, "the page sent no /predict request"
        return self.predictions[-1].json()

    def error(self) -> str:
        self.page.wait_for_selector("#error:not([hidden])")
        assert not self.page.is_visible("#result")
        return self.page.inner_text("#error")

    def close(self):
        self.context.close()


def api_answer(gateway, path: Path, model: str | None, client_id: str | None = None) -> dict:
    params = {"top_k": 3, **({"model": model} if model else {})}
    headers = {"X-Client-Id": client_id} if client_id else {}
    with open(path, "rb") as f:
        r = requests.post(f"{gateway.url}/predict", params=params, headers=headers,
                          files={"file": (path.name, f, "image/jpeg")}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def js_fixed1(x: float) -> str:
    """JavaScript's x.toFixed(1): the exact binary value rounded, ties up (Python's format rounds ties to even)."""
    from decimal import ROUND_HALF_UP, Decimal

    return str(Decimal(x).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def assert_shows(shown: dict, answer: dict) -> None:
    """The page shows exactly the gateway's answer: top 3, percentages, bars, the open-set verdict, model."""
    assert shown["breeds"] == [e["breed"] for e in answer["top_k"][:3]]
    assert shown["percent"] == [f"{js_fixed1(e['probability'] * 100)} %" for e in answer["top_k"][:3]]
    assert [float(w.removesuffix("%")) for w in shown["bars"]] == [
        float(js_fixed1(e["probability"] * 100)) for e in answer["top_k"][:3]]
    assert shown["unknown"] == (not answer["is_known_breed"]) == (answer["answer"] != "breed")
    top = answer["top_k"][0]["breed"]
    article = "an" if top[0].lower() in "aeiou" else "a"
    assert shown["answer"] == (None if shown["unknown"] else f"Looks like {article} {top}")
    group = {"split-a": " · A/B test: group A", "split-b": " · A/B test: group B"}.get(answer.get("route"), "")
    assert re.fullmatch(rf"Model {re.escape(answer['model'])} {re.escape(answer['model_version'])}{group}"
                        r" · answered in \d+ ms", shown["meta"]), shown["meta"]


def test_page_is_local_phone_sized_and_lists_the_models(browser, gateway, real_model):
    tab = Page(browser, gateway, PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    try:
        page = tab.page
        models = requests.get(f"{gateway.url}/models", timeout=30).json()
        options = page.locator("#model option")
        values = options.evaluate_all("os => os.map(o => o.value)")
        assert values[0] == "" and sorted(values[1:]) == sorted(m["name"] for m in models["models"])
        # preselected: "Automatic", which sends no model, so the gateway's default (or A/B split) decides
        assert page.eval_on_selector("#model", "s => s.value") == ""
        texts = options.all_inner_texts()
        assert models["default"] == gateway.default_model and texts[0] == f"Automatic ({gateway.default_model})"
        version = archive_card(ROOT / "model_store" / f"{REAL_MODEL}.mar")["version"]
        assert f"{gateway.default_model} 1.0.0 (default)" in texts and f"{REAL_MODEL} {version}" in texts
        assert "up to 10 MB" in page.inner_text("#limit")
        # the phone's file chooser and camera: images only, the camera input asks for the rear camera
        assert page.get_attribute("#file", "accept") == "image/*"
        assert page.get_attribute("#camera", "accept") == "image/*"
        assert page.get_attribute("#camera", "capture") == "environment"
        # fits a 390 px phone screen: no sideways scrolling, buttons big enough to tap
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert page.is_visible(".button.camera")  # a touch screen: the camera button is there
        for box in (page.locator(".buttons .button").nth(i).bounding_box() for i in range(2)):
            assert box["height"] >= 44 and box["width"] >= 120
        # everything comes from the gateway itself: no CDN, no other host
        assert tab.requests and all(u.startswith(gateway.url) for u in tab.requests), tab.requests
        csp = requests.get(f"{gateway.url}/", timeout=30).headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp
        assert tab.errors == []
    finally:
        tab.close()


def test_a_real_val_photo_gets_its_breed_and_a_screenshot(browser, gateway, real_model, data_root, tmp_path):
    from playwright.sync_api import expect

    photo, wnid = next((p, w) for p, w in val_images(data_root) if w == "n02111889")  # Samoyed
    tab = Page(browser, gateway, DESKTOP)
    try:
        page = tab.page
        assert not page.is_visible(".button.camera")  # a computer with a mouse: no camera button
        page.select_option("#model", REAL_MODEL)
        assert "efficientnet_lite0" in page.inner_text("#model-info")
        tab.choose(photo)
        shown = tab.result()
        answer = tab.answer()
        assert answer["model"] == REAL_MODEL and answer["top_k"][0]["wnid"] == wnid and answer["is_known_breed"]
        assert_shows(shown, answer)
        again = api_answer(gateway, photo, REAL_MODEL)  # the API agrees on the verdict
        assert again["top_k"][0]["wnid"] == wnid and again["is_known_breed"]
        assert shown["answer"] == "Looks like a Samoyed"
        assert page.evaluate("document.getElementById('preview').naturalWidth") > 0  # the preview
        tab.page.screenshot(path=str(tmp_path / "web-result.png"), full_page=True)

        # another model from the picker: the same photo is sent again, the answer names that model
        page.select_option("#model", "tiny")
        expect(page.locator("#meta")).to_have_text(re.compile(r"^Model tiny "), timeout=60_000)
        assert_shows(tab.result(), tab.answer())
        assert tab.answer()["model"] == "tiny"
        assert tab.answer()["top_k"][0]["wnid"] == api_answer(gateway, photo, "tiny")["top_k"][0]["wnid"]
        assert tab.errors == []
    finally:
        tab.close()
    assert (tmp_path / "web-result.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("WOOF_UPDATE_SCREENSHOT"):  # refresh the README's picture on purpose, not on every run
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "web-result.png", SCREENSHOT)


def test_drag_and_drop_and_the_not_a_breed_message(browser, gateway, real_model, tmp_path):
    from PIL import Image
    from skimage import data as skimage_data

    cat = tmp_path / "cat.jpg"
    Image.fromarray(skimage_data.chelsea()).save(cat, quality=92)
    tab = Page(browser, gateway, PHONE, is_mobile=True, has_touch=True)
    try:
        page = tab.page
        page.select_option("#model", REAL_MODEL)
        drop = page.evaluate_handle("""([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: "image/jpeg"}));
            return transfer;
        }""", [base64.b64encode(cat.read_bytes()).decode(), cat.name])
        page.dispatch_event("#drop", "drop", {"dataTransfer": drop})
        shown = tab.result()
        answer = tab.answer()
        assert answer["model"] == REAL_MODEL and answer["answer"] == "not_dog"  # the open-set rule: a cat
        assert answer["is_known_breed"] is False and answer["other_breed"] is None
        assert_shows(shown, answer)
        assert api_answer(gateway, cat, REAL_MODEL)["answer"] == "not_dog"
        assert shown["unknown"] and shown["answer"] is None
        assert "does not look like a dog" in page.inner_text("#unknown")
        page.screenshot(path=str(tmp_path / "web-not-a-breed-phone.png"), full_page=True)
        assert tab.errors == []
    finally:
        tab.close()


def test_text_files_and_too_large_files_get_clear_messages(browser, gateway, tmp_path):
    tab = Page(browser, gateway, PHONE, is_mobile=True, has_touch=True)
    try:
        page = tab.page
        text = b"This is a shopping list, not a photo.\n" * 20
        # a text file: the page refuses it before uploading
        tab.choose(name="notes.txt", mimeType="text/plain", buffer=text)
        message = tab.error()
        assert "“notes.txt” is not an image" in message and "Please choose a photo" in message
        # a text file that claims to be a JPEG: the gateway refuses it and the page says why
        answer = requests.post(f"{gateway.url}/predict", files={"file": ("dog.jpg", io.BytesIO(text), "image/jpeg")},
                               timeout=30)
        assert answer.status_code in (415, 422)
        page.evaluate("document.getElementById('error').hidden = true")
        with page.expect_response(lambda r: "/predict" in r.url) as response:
            tab.choose(name="dog.jpg", mimeType="image/jpeg", buffer=text)
        assert response.value.status == answer.status_code
        message = tab.error()
        assert "could not be read as an image" in message or "not an image woof can read" in message
        # over the gateway's upload limit (10 MB): refused on the phone, nothing is sent
        sent = len(tab.requests)
        tab.choose(name="huge.jpg", mimeType="image/jpeg", buffer=b"\xff\xd8\xff" + b"\0" * (12 * 1024 * 1024))
        message = tab.error()
        assert "too large (12 MB)" in message and "The limit is 10 MB" in message
        assert len(tab.requests) == sent
        page.screenshot(path=str(tmp_path / "web-too-large-phone.png"), full_page=True)
        assert tab.errors == []
    finally:
        tab.close()


def test_automatic_follows_the_default_model_and_the_ab_split(browser, gateway, data_root):
    photo, _ = val_images(data_root)[0]
    auth = {"Authorization": f"Bearer {gateway.admin_token}"}
    tab = Page(browser, gateway, DESKTOP)
    try:
        page = tab.page
        with page.expect_request(lambda r: "/predict" in r.url) as sent:
            tab.choose(photo)
        assert "model=" not in sent.value.url
        client = sent.value.headers["x-client-id"]
        assert re.fullmatch(r"web-[0-9a-f]{24}", client)  # kept in localStorage: the same group every time
        shown = tab.result()
        answer = tab.answer()
        assert answer["model"] == gateway.default_model and answer["route"] == "default"
        assert_shows(shown, answer)

        r = requests.post(f"{gateway.url}/admin/split", json={"a": "tiny-onnx", "b": "tiny", "b_percent": 50},
                          headers=auth, timeout=60)
        assert r.status_code == 200, r.text
        page.reload()
        page.wait_for_selector("#model:not([disabled])")
        assert page.inner_text("#model option:first-child") == "Automatic (A/B test: tiny-onnx / tiny)"
        assert "50 % of visitors get tiny" in page.inner_text("#model-info")
        with page.expect_request(lambda r: "/predict" in r.url) as sent:
            tab.choose(photo)
        assert sent.value.headers["x-client-id"] == client
        shown = tab.result()
        answer = tab.answer()
        assert answer["route"] in ("split-a", "split-b")
        assert_shows(shown, answer)
        same_client = api_answer(gateway, photo, None, client)  # the same client id: the same group, by hash
        assert (same_client["route"], same_client["model"]) == (answer["route"], answer["model"])
        assert "A/B test: group" in shown["meta"]
        assert tab.errors == []
    finally:
        requests.delete(f"{gateway.url}/admin/split", headers=auth, timeout=60)
        tab.close()
