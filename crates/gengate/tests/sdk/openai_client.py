"""The official openai SDK, unchanged, pointed at gengate: images.generate
as base64 and as URLs, the model list, and a refused request."""
import base64
import json
import os
import sys

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["GENGATE_URL"] + "/v1", api_key=os.environ["GENGATE_KEY"])

b64 = client.images.generate(
    model="dall-e-2", prompt="a red fox in snow", n=2, size="512x512", response_format="b64_json"
)
assert len(b64.data) == 2, b64
first = base64.b64decode(b64.data[0].b64_json)
assert first[:2] == b"\xff\xd8" or first[:8] == b"\x89PNG\r\n\x1a\n", first[:8]

urls = client.images.generate(model="dall-e-3", prompt="a blue fox", quality="hd", style="natural")
assert urls.data[0].url.startswith(os.environ["GENGATE_URL"]), urls

models = [m.id for m in client.models.list()]

try:
    client.images.generate(model="dall-e-3", prompt="too many", n=20)
    sys.exit("n=20 was accepted")
except openai.BadRequestError as e:
    assert e.param == "n", (e.param, e.body)

print(json.dumps({"b64": b64.data[0].b64_json, "url": urls.data[0].url, "models": models}))
