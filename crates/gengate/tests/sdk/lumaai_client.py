"""The official lumaai SDK, unchanged, pointed at gengate.

Creates a video and an image, follows them to completion, lists, deletes,
and prints what the Rust test checks further (the files behind the URLs)."""
import json
import os
import sys
import time

import lumaai
from lumaai import LumaAI

# The SDK's defaults (60 s timeout, 2 retries): a retried create would show
# as an extra generation in the listing below.
client = LumaAI(
    base_url=os.environ["GENGATE_URL"] + "/dream-machine/v1",
    auth_token=os.environ["GENGATE_KEY"],
)


def finish(gen_id):
    deadline = time.time() + 60
    while True:
        g = client.generations.get(gen_id)
        if g.state in ("completed", "failed"):
            return g
        assert time.time() < deadline, f"{gen_id} still {g.state}"
        time.sleep(0.05)


assert client.ping.check().message == "pong"
assert client.credits.get().credit_balance > 0

video = client.generations.create(
    model="ray-2", prompt="a lake at dusk", aspect_ratio="9:16", loop=True, duration="5s"
)
assert video.state == "queued", video
assert video.generation_type == "video"
video = finish(video.id)
assert video.state == "completed", video
assert video.assets.video.endswith(".mp4"), video.assets

longer = client.generations.create(
    model="ray-2",
    prompt="and on",
    keyframes={"frame0": {"type": "generation", "id": video.id}},
)
assert longer.request.keyframes.frame0.id == video.id
longer = finish(longer.id)
assert longer.state == "completed", longer

image = client.generations.image.create(
    model="photon-1", prompt="a red fox", aspect_ratio="1:1", sync=True, sync_timeout=30
)
assert image.state == "completed", image
assert image.state == "completed", image
assert image.assets.image, image.assets

page = client.generations.list(limit=2, offset=0)
assert page.count == 2 and page.has_more, page
everything = client.generations.list(limit=100)
ids = [g.id for g in everything.generations]
assert ids == [image.id, longer.id, video.id], ids

client.generations.delete(image.id)
try:
    client.generations.get(image.id)
    sys.exit("a deleted generation is still there")
except lumaai.NotFoundError:
    pass

try:
    client.generations.create(model="ray-2", prompt="x", aspect_ratio="2:1")
    sys.exit("a bad aspect ratio was accepted")
except lumaai.BadRequestError as e:
    assert "aspect_ratio" in str(e), e

print(json.dumps({"video": video.assets.video, "deleted": image.id, "kept": [video.id, longer.id]}))
